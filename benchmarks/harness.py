"""The shared harness of the benchmarks: pinned threads, seeds, interleaved repeats, reports.

Every benchmark compares two sides, the course's code and a reference implementation, in one
process on one machine. :func:`interleave` runs them in alternating order, ``A B`` then ``B A``
and so on, so that a change in the machine's load (other processes on shared cores) falls on
both sides alike; each side's figure is the median over its repeats, and the report gives the
ratio course / reference of every figure. Nothing here asserts a speed: timings are recorded
with the load average and the versions that produced them.

A benchmark builds a report with :func:`new_report`, fills ``runs`` and ``metrics`` (one
:func:`metric` per figure), adds ``curves`` to plot, and calls :func:`write_report`, which writes
``<name>.json``, ``<name>.md`` and ``<name>.png`` under ``--out-dir`` (``benchmarks/results/``)
and rebuilds ``SUMMARY.md`` there from the latest JSON of every benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "labs") not in sys.path:
    sys.path.insert(0, str(ROOT / "labs"))  # run from a checkout without installing dlwb

RESULTS = ROOT / "benchmarks" / "results"
SCHEMA_VERSION = 1
SIDES = ("course", "reference")
PACKAGES = ("torch", "numpy", "keras", "tensorflow-cpu", "tensorflow", "scipy", "matplotlib")
# The order of the benchmarks in SUMMARY.md; a benchmark not listed comes after these.
ORDER = ("transformer_char", "lstm_char", "mnist_cnn", "keras_vs_torch", "gan", "gpu", "gpt_throughput")


def parser(description: str, *, repeats: int = 3) -> argparse.ArgumentParser:
    """The command line every benchmark shares: ``--smoke``, ``--threads``, ``--repeats``, ``--seed``, ``--out-dir``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long budgets and tiny data: checks that everything runs, measures nothing")
    p.add_argument("--threads", type=int, choices=(1, 2), default=1,
                   help="torch.set_num_threads (default 1: the figures do not depend on what else runs)")
    p.add_argument("--repeats", type=int, default=repeats, help=f"runs per side, interleaved (default {repeats})")
    p.add_argument("--seed", type=int, default=1337, help="seed of the first repeat; repeat r uses seed + r")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where the .json, .md and .png go")
    return p


def pin_threads(threads: int) -> None:
    """Pin PyTorch (and, when it is imported later, TensorFlow through OMP) to ``threads`` threads."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    torch.set_num_threads(threads)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (the benchmarks that use Keras seed it themselves)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or ``None`` where the OS has none (Windows)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(threads: int) -> dict:
    """Versions, machine and load: what a reader needs to judge the figures."""
    versions = {}
    for dist in PACKAGES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
        "git_commit": _git_commit(),
    }


def new_report(name: str, title: str, args: argparse.Namespace, *, what: str, settings: dict) -> dict:
    """The report a benchmark fills in; ``command`` is how to run it again."""
    argv = " ".join(sys.argv[1:])
    return {
        "schema": SCHEMA_VERSION,
        "benchmark": name,
        "title": title,
        "what": what,
        "command": f".venv/bin/python benchmarks/{name}.py {argv}".strip(),
        "smoke": bool(args.smoke),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(args.threads),
        "load_average": {"start": load_average()},
        "repeats": args.repeats,
        "seed": args.seed,
        "settings": settings,
        "runs": {side: [] for side in SIDES},
        "metrics": [],
        "curves": [],
        "plot": {},
        "notes": [],
    }


def interleave(run: Callable[[str, int], dict], repeats: int, sides: Sequence[str] = SIDES, *,
               seed: int = 1337, log: Callable[[str], None] = print) -> dict[str, list[dict]]:
    """Call ``run(side, repeat)`` for every side, ``repeats`` times, alternating the order.

    Repeat ``r`` runs the sides in order when ``r`` is even and reversed when odd, after
    seeding with ``seed + r`` (the same seed for both sides of a repeat). Each result gets
    ``repeat``, ``seconds`` (the call's wall time) and the 1-minute ``load_average`` before
    and after the call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(repeats):
        for side in (sides if r % 2 == 0 else tuple(reversed(sides))):
            set_seed(seed + r)
            before = load_average()
            start = time.perf_counter()
            result = run(side, r)
            seconds = time.perf_counter() - start
            result.update(repeat=r, seconds=round(seconds, 2),
                          load_average=[before and before[0], (load_average() or [None])[0]])
            runs[side].append(result)
            log(f"  repeat {r + 1}/{repeats} {side:<9} done in {seconds:6.1f} s (load {result['load_average']})")
    return runs


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values, where ``None`` (not reached) counts as larger than any number.

    ``None`` when at least half the values are ``None``: the median run did not get there.
    """
    ordered = sorted(values, key=lambda v: math.inf if v is None else v)
    if not ordered:
        return None
    if len(ordered) % 2:
        return ordered[len(ordered) // 2]
    lo, hi = ordered[len(ordered) // 2 - 1], ordered[len(ordered) // 2]
    return None if lo is None or hi is None else (lo + hi) / 2


def metric(name: str, course: float | None, reference: float | None, *, unit: str = "", better: str = "lower",
           target: str | None = None, course_label: str = "course", reference_label: str = "reference",
           spread: dict[str, list[float | None]] | None = None) -> dict:
    """One row of the table: both sides' medians and ``ratio = course / reference`` (``None`` if undefined).

    ``better`` says which way is good ("lower" or "higher"); ``target`` is the goal for the
    ratio, as text (e.g. "<= 0.5"), when there is one; ``spread`` is :func:`spread` of the runs,
    shown as ``[min-max]`` beside each median that came from more than one run.
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    ratio = None if course is None or reference in (None, 0) else course / reference
    return {"metric": name, "unit": unit, "course": course, "reference": reference, "ratio": ratio,
            "better": better, "target": target, "course_label": course_label, "reference_label": reference_label,
            "spread": spread}


def summarise(runs: dict[str, list[dict]], key: str) -> tuple[float | None, float | None]:
    """The median of ``key`` over the course runs and over the reference runs."""
    return tuple(median([r.get(key) for r in runs[side]]) for side in SIDES)


def spread(runs: dict[str, list[dict]], key: str) -> dict[str, list[float | None]]:
    """The smallest and largest ``key`` of each side's runs, ``{side: [min, max]}``; ``None`` is "not reached"."""
    out = {}
    for side in SIDES:
        values = [r.get(key) for r in runs[side]]
        numbers = [v for v in values if v is not None]
        out[side] = [min(numbers) if numbers else None, None if None in values or not numbers else max(numbers)]
    return out


def add_curves(report: dict, runs: dict[str, list[dict]], y: str, *, xlabel: str, ylabel: str) -> None:
    """One curve per run (``x``: each point's ``t_s``, ``y``: its ``y``) and the plot's axis labels."""
    for side in SIDES:
        for res in runs[side]:
            report["curves"].append({"label": f"{side} (repeat {res['repeat'] + 1})", "side": side,
                                     "x": [p["t_s"] for p in res["points"]],
                                     "y": [p[y] for p in res["points"]]})
    report["plot"] = {"xlabel": xlabel, "ylabel": ylabel}


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "not reached" if unit == "s" else "n/a"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:.4g}"
    return f"{text} {unit}".strip()


def _fmt_spread(m: dict, side: str) -> str:
    lo_hi = (m.get("spread") or {}).get(side)
    if not lo_hi or lo_hi[0] is None or lo_hi[0] == lo_hi[1]:
        return ""
    lo, hi = (_fmt(v, m["unit"]).removesuffix(f" {m['unit']}") for v in lo_hi)  # the unit once, after the median
    return f" [{lo}-{hi}]"


def markdown_table(report: dict) -> str:
    """The report's metrics as a Markdown table (one row per figure)."""
    rows = ["| figure | course | reference | ratio course / reference | better | target |",
            "|---|---|---|---|---|---|"]
    for m in report["metrics"]:
        course = _fmt(m["course"], m["unit"]) + _fmt_spread(m, "course")
        reference = _fmt(m["reference"], m["unit"]) + _fmt_spread(m, "reference")
        if m["course_label"] != "course":
            course = f"{course} ({m['course_label']})"
        if m["reference_label"] != "reference":
            reference = f"{reference} ({m['reference_label']})"
        ratio = "n/a" if m["ratio"] is None else f"{m['ratio']:.2f}"
        rows.append(f"| {m['metric']} | {course} | {reference} | {ratio} | {m['better']} | {m['target'] or ''} |")
    return "\n".join(rows)


def _environment_line(report: dict) -> str:
    env, load = report["environment"], report["load_average"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    cuda = f", CUDA {env['cuda']}" if env["cuda"] else ""
    return (f"{env['platform']}, {env['cpu_count']} CPUs, {env['threads']} thread(s){cuda}; {versions}; "
            f"load average (1, 5, 15 min) {load.get('start')} at the start, {load.get('end')} at the end")


def markdown(report: dict) -> str:
    """The whole report as Markdown: what was run, the table, the notes, the environment."""
    lines = [f"## {report['title']}", "", report["what"], "",
             f"Command: `{report['command']}`" + ("  (smoke run: the figures mean nothing)" if report["smoke"] else ""),
             f"Run {report['started_utc']}, {report['wall_s']:.0f} s, {report['repeats']} repeat(s) per side "
             f"(median reported), seed {report['seed']}.", "",
             markdown_table(report), ""]
    lines += [f"- {note}" for note in report["notes"]]
    if report["notes"]:
        lines.append("")
    lines += [f"Environment: {_environment_line(report)}.", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """One figure of the report's ``curves``: each a dict with ``label``, ``x``, ``y`` (and ``side``).

    The course's curves are drawn solid and the reference's dashed; ``report["plot"]`` may give
    ``xlabel``, ``ylabel`` and ``kind`` ("line", or "bar" for one value per label).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = report["plot"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if spec.get("kind") == "bar":
        labels = [c["label"] for c in report["curves"]]
        values = [c["y"][0] if c["y"] else float("nan") for c in report["curves"]]
        colors = ["C0" if c.get("side") == "course" else "C1" for c in report["curves"]]
        ax.barh(labels, values, color=colors)
        ax.invert_yaxis()
    else:
        for c in report["curves"]:
            ax.plot(c["x"], c["y"], "-" if c.get("side") == "course" else "--", marker=".",
                    color="C0" if c.get("side") == "course" else "C1", alpha=0.85, label=c["label"])
        if report["curves"]:
            ax.legend(fontsize=8)
    ax.set(xlabel=spec.get("xlabel", ""), ylabel=spec.get("ylabel", ""), title=report["title"])
    if spec.get("logy"):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out_dir: Path, *, started: float) -> Path:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` to ``out_dir``, then rebuild ``SUMMARY.md``."""
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["load_average"]["end"] = load_average()
    report["ratios"] = {m["metric"]: m["ratio"] for m in report["metrics"]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = report["benchmark"]
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(markdown(report))
    if report["curves"]:
        plot(report, out_dir / f"{name}.png")
    write_summary(out_dir)
    print(markdown_table(report))
    print(f"wrote {path} (.md, .png)")
    return path


def write_summary(out_dir: Path) -> Path:
    """``SUMMARY.md``: the latest table of every benchmark whose JSON is in ``out_dir``."""
    reports = []
    for path in Path(out_dir).glob("*.json"):
        report = json.loads(path.read_text())
        if report.get("schema") == SCHEMA_VERSION:
            reports.append(report)
    reports.sort(key=lambda r: (ORDER.index(r["benchmark"]) if r["benchmark"] in ORDER else len(ORDER),
                                r["benchmark"]))
    lines = ["# Benchmark results", "",
             "Course code against reference implementations, run side by side in one process "
             "(interleaved repeats, medians, ratios course / reference). Regenerated by each benchmark run; "
             "see `benchmarks/README.md`.", ""]
    for report in reports:
        lines.append(markdown(report))
    path = Path(out_dir) / "SUMMARY.md"
    path.write_text("\n".join(lines))
    return path


class Stopwatch:
    """Training time that can be paused (for evaluations): ``elapsed`` counts only running time."""

    def __init__(self) -> None:
        self._total, self._since = 0.0, None

    def start(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self._total += time.perf_counter() - self._since
            self._since = None

    @property
    def elapsed(self) -> float:
        return self._total + (0.0 if self._since is None else time.perf_counter() - self._since)

