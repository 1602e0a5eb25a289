"""Run the CPU set of benchmarks one after another, each in its own process.

The budgets are the standalone defaults scaled down, with 3 interleaved repeats wherever a
figure has a target ratio: the char Transformer's 60 and 150 s checkpoints (each side also
stops at iteration 2000, whose validation loss it reports; 3 repeats), the char LSTM at 60 s
(1 repeat), the MNIST CNN with at most 400 s of training per run (3 repeats: long enough for
the pytorch/examples recipe to reach 99.0%; the longest part of the set), Keras vs PyTorch
with 3 epochs (3 repeats), the GAN with 30 s per side (1 repeat) and the attention throughput
in 5 rounds. The GPU benchmark runs too and skips where there is no CUDA. Results go to
``benchmarks/results/`` (``SUMMARY.md`` combines them)::

    .venv/bin/python -m benchmarks                  # or: make bench
    .venv/bin/python -m benchmarks --threads 2 --only transformer_char lstm_char
    .venv/bin/python -m benchmarks --smoke          # every benchmark for a few seconds
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent

CPU_SET = {  # benchmark -> the arguments of the full run
    "transformer_char": ["--checkpoints", "60", "150", "--repeats", "3"],  # and iteration 2000 within 150 s
    "lstm_char": ["--checkpoints", "60", "--repeats", "1"],
    "mnist_cnn": ["--budget", "400", "--repeats", "3"],  # time to 99.0% (and 99.3%) within 400 s of training
    "keras_vs_torch": ["--epochs", "3", "--repeats", "3"],
    "gan": ["--budget", "30", "--repeats", "1"],
    "gpt_throughput": ["--repeats", "5"],
    "gpu": [],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, choices=(1, 2), default=1, help="torch threads of every benchmark")
    p.add_argument("--smoke", action="store_true", help="seconds-long budgets (checks, no measurements)")
    p.add_argument("--only", nargs="+", choices=sorted(CPU_SET), help="run only these benchmarks")
    p.add_argument("--out-dir", type=Path, default=BENCHMARKS / "results")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    failed = []
    start = time.perf_counter()
    for name in args.only or CPU_SET:
        extra = ["--smoke", "--repeats", "1"] if args.smoke else CPU_SET[name]
        out_dir = [] if args.out_dir.resolve() == (BENCHMARKS / "results") else ["--out-dir", str(args.out_dir)]
        cmd = [sys.executable, "-m", f"benchmarks.{name}", "--threads", str(args.threads), *out_dir, *extra]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        # From the folder above this package: the child imports the same `benchmarks` as this process.
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
        print(f"=== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\nall done in {time.perf_counter() - start:.0f} s; summary: {args.out_dir / 'SUMMARY.md'}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
