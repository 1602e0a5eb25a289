"""The shared harness of the benchmarks: pinned threads, seeds, interleaved repeats, reports.

Every benchmark compares two sides, the course's code and a reference implementation, in one
process on one machine. :func:`interleave` runs them in alternating order, ``A B`` then ``B A``
and so on, so that a change in the machine's load (other processes on shared cores) falls on
both sides alike; each side's figure is the median over its repeats, and the report gives the
ratio course / reference of every figure. Nothing here asserts a speed: timings are recorded
with the load average and the versions that produced them.

A benchmark's ``main`` measures and declares; the harness renders. It calls :func:`start`
(threads pinned, the start noted), runs both sides with :func:`interleave`, and declares its
:class:`Report`: the title, what is compared, the settings, and one :class:`Figure` per row of
the table (the key of the run records it is the median of, its unit, which way is better, the
target of the ratio course / reference) and what to plot. :func:`write_report` turns that and
the runs into ``<name>.json`` (everything), ``<name>.md`` (command, timing, the table of medians
with their ``[min-max]``, ratios and whether each target is met, the notes, versions and load)
and ``<name>.png`` under ``--out-dir`` (``benchmarks/results/``), then rebuilds ``SUMMARY.md``
(every benchmark's table) and ``PERFORMANCE.md`` (the README's Performance table: the figures
declared ``headline``) there from the latest JSON of every benchmark.
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
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


@dataclass(frozen=True)
class Session:
    """When and how a benchmark was started: the report's command, start time and load."""

    args: argparse.Namespace
    command: str
    started: float  # time.perf_counter() at the start: the report's wall time counts from here
    started_utc: str
    load_at_start: list[float] | None


def parse_args(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``p.parse_args(argv)`` (the command line when ``argv`` is None), keeping ``argv`` for the report's command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    args.argv = argv
    return args


def start(args: argparse.Namespace, script: str) -> Session:
    """Pin the threads, note the start; ``script``: the benchmark's ``__file__`` (run as ``-m benchmarks.<stem>``)."""
    pin_threads(args.threads)
    return Session(args, f".venv/bin/python -m benchmarks.{Path(script).stem} {' '.join(args.argv)}".strip(),
                   time.perf_counter(),
                   datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), load_average())


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


def target_met(course: float | None, reference: float | None, better: str, target: float) -> bool | None:
    """Whether ``course / reference`` is at most ``target`` (lower is better) or at least it (higher is better).

    Where lower is better a side that has no figure counts as larger than any number, as in
    :func:`median`: the course missing misses the target, the reference missing meets it.
    ``None`` where that does not decide (no figure on a higher-is-better row, or on both sides).
    """
    if course is not None and reference not in (None, 0):
        ratio = course / reference
        return ratio <= target if better == "lower" else ratio >= target
    if better == "lower" and (course is None) != (reference is None):
        return reference is None
    return None


def metric(name: str, course: float | None, reference: float | None, *, unit: str = "", better: str = "lower",
           target: float | None = None, course_label: str = "course", reference_label: str = "reference",
           spread: dict[str, list[float | None]] | None = None, headline: bool = False) -> dict:
    """One row of the table: both sides' medians and ``ratio = course / reference`` (``None`` if undefined).

    ``better`` says which way is good ("lower" or "higher"); ``target`` is the goal for the
    ratio, when there is one: at most it where lower is better, at least it where higher is
    (stored as text, e.g. "<= 0.50", with ``target_met``); ``spread`` is :func:`spread` of the
    runs, shown as ``[min-max]`` beside each median that came from more than one run;
    ``headline`` rows are also rows of the README's Performance table.
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    ratio = None if course is None or reference in (None, 0) else course / reference
    row = {"metric": name, "unit": unit, "course": course, "reference": reference, "ratio": ratio,
           "better": better, "target": None, "course_label": course_label, "reference_label": reference_label,
           "spread": spread, "headline": headline}
    if target is not None:
        row["target"] = f"{'<=' if better == 'lower' else '>='} {target:.2f}"
        row["target_met"] = target_met(course, reference, better, target)
    return row


def spread(runs: dict[str, list[dict]], key: str) -> dict[str, list[float | None]]:
    """The smallest and largest ``key`` of each side's runs, ``{side: [min, max]}``; ``None`` is "not reached"."""
    out = {}
    for side in SIDES:
        values = [r.get(key) for r in runs[side]]
        numbers = [v for v in values if v is not None]
        out[side] = [min(numbers) if numbers else None, None if None in values or not numbers else max(numbers)]
    return out


@dataclass(frozen=True)
class Figure:
    """One row of a report: the median over the repeats of one key of each side's run records.

    The row gives both medians with their ``[min-max]`` over the repeats, the ratio
    course / reference, which way is better and, with ``target``, whether the ratio meets it:
    ``ratio <= target`` where lower is better, ``ratio >= target`` where higher is.
    """

    label: str  # what the figure is: the table's first column
    key: str  # the key of each run record that holds it
    unit: str = ""  # "s", "tok/s", "img/s"; "" for losses and accuracies
    better: str = "lower"  # "lower" or "higher": which way is good
    target: float | None = None  # the aim for the ratio course / reference, if there is one
    sides: tuple[str, str] = SIDES  # each side's name beside its value where it is not "course" / "reference"
    detail: tuple[str, str] | None = None  # (key, format) of a median shown beside each value: ("epochs", "epoch {:g}")
    absent: tuple[str | None, str | None] = (None, None)  # said beside a side that has no figure
    headline: bool = False  # also a row of the README's Performance table

    def measure(self, runs: dict[str, list[dict]]) -> dict:
        """The :func:`metric` row of these runs."""
        values = [median([r.get(self.key) for r in runs[side]]) for side in SIDES]
        labels = []
        for side, name, value, absent in zip(SIDES, self.sides, values, self.absent):
            parts = [name] if name != side else []
            detail = None if self.detail is None else median([r.get(self.detail[0]) for r in runs[side]])
            if value is None and absent:
                parts.append(absent)
            elif detail is not None:
                parts.append(self.detail[1].format(detail))
            labels.append(", ".join(parts) or side)
        return metric(self.label, *values, unit=self.unit, better=self.better, target=self.target,
                      course_label=labels[0], reference_label=labels[1], spread=spread(runs, self.key),
                      headline=self.headline)


@dataclass(frozen=True)
class _LinePlot:
    y: str  # the run records' key drawn
    xlabel: str
    ylabel: str

    def axes(self) -> dict:
        return {"xlabel": self.xlabel, "ylabel": self.ylabel}


@dataclass(frozen=True)
class Lines(_LinePlot):
    """One curve per run: each of its ``points``' ``x`` against its ``y``."""

    x: str = "t_s"

    def curves(self, runs: dict[str, list[dict]]) -> list[dict]:
        return [{"label": f"{side} (repeat {res['repeat'] + 1})", "side": side,
                 "x": [p[self.x] for p in res["points"]], "y": [p[self.y] for p in res["points"]]}
                for side in SIDES for res in runs[side]]



# The character-level language models' plot: validation loss against training time, one curve per run.
VAL_LOSS_CURVES = Lines("val_loss", xlabel="training time (s), evaluations excluded",
                        ylabel="validation loss (nats/char)")

@dataclass(frozen=True)
class PerRepeat(_LinePlot):
    """One curve per side: its ``y`` at each repeat (x: the repeat, from 1)."""

    sides: tuple[str, str] = SIDES  # the curves' labels

    def curves(self, runs: dict[str, list[dict]]) -> list[dict]:
        return [{"label": label, "side": side, "x": [r["repeat"] + 1 for r in runs[side]],
                 "y": [r[self.y] for r in runs[side]]} for side, label in zip(SIDES, self.sides)]


@dataclass(frozen=True)
class Bars:
    """One bar per side and key: the key's median over the side's runs; ``extra`` adds fixed bars (baselines)."""

    keys: dict[str, str]  # bar name -> run key; the bar's label is the name and the side's name
    xlabel: str
    sides: tuple[str, str] = SIDES
    extra: dict[str, float] = field(default_factory=dict)

    def curves(self, runs: dict[str, list[dict]]) -> list[dict]:
        bars = [{"label": f"{name} {label}".strip(), "side": side, "y": [median([r[key] for r in runs[side]])]}
                for side, label in zip(SIDES, self.sides) for name, key in self.keys.items()]
        return bars + [{"label": name, "side": "baseline", "y": [value]} for name, value in self.extra.items()]

    def axes(self) -> dict:
        return {"kind": "bar", "xlabel": self.xlabel}


@dataclass(frozen=True)
class Report:
    """What a benchmark reports, declared once; :func:`write_report` renders it with the runs.

    From these and the runs come ``<name>.json`` (everything), ``<name>.md`` (the table),
    ``<name>.png`` (the plot) and the benchmark's rows of ``SUMMARY.md`` and ``PERFORMANCE.md``.
    """

    name: str  # the files' name: <name>.json, .md, .png
    title: str  # the Markdown heading
    what: str  # what is compared with what, and how: one paragraph
    summary: str  # the benchmark's cell in the README's Performance table
    figures: Sequence[Figure]  # the table's rows, in order
    settings: dict  # the recipes and budgets, recorded in the JSON
    notes: Sequence[str] = ()  # Markdown bullets under the table
    plot: Lines | PerRepeat | Bars | None = None
    published: dict[str, float] = field(default_factory=dict)  # figures published elsewhere that it quotes


def render(report: Report, runs: dict[str, list[dict]], session: Session) -> dict:
    """The JSON record of a report: its declaration, the runs, their figures, the machine and the load."""
    args = session.args
    record = {
        "schema": SCHEMA_VERSION, "benchmark": report.name, "title": report.title, "what": report.what,
        "summary": report.summary, "command": session.command, "smoke": bool(args.smoke),
        "started_utc": session.started_utc, "environment": environment(args.threads),
        "load_average": {"start": session.load_at_start, "end": load_average()}, "repeats": args.repeats,
        "seed": args.seed, "settings": report.settings, "runs": runs,
        "metrics": [figure.measure(runs) for figure in report.figures],
        "curves": report.plot.curves(runs) if report.plot else [], "plot": report.plot.axes() if report.plot else {},
        "notes": list(report.notes), "published": dict(report.published),
        "wall_s": round(time.perf_counter() - session.started, 1),
    }
    record["ratios"] = {m["metric"]: m["ratio"] for m in record["metrics"]}
    return record


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


def _cell(m: dict, side: str) -> str:
    """One side's value: the median, its ``[min-max]`` over the repeats, and its label where not the side's name."""
    cell = _fmt(m[side], m["unit"]) + _fmt_spread(m, side)
    label = m[f"{side}_label"]
    return cell if label == side else f"{cell} ({label})"


def _ratio(m: dict) -> str:
    return "n/a" if m["ratio"] is None else f"{m['ratio']:.2f}"


TARGET_MET = {True: "met", False: "not met", None: "not measured"}


def _target(m: dict) -> str:
    """The target of the ratio and whether this run met it (records older than ``target_met``: the target alone)."""
    if not m["target"] or "target_met" not in m:
        return m["target"] or ""
    return f"{m['target']} ({TARGET_MET[m['target_met']]})"


def markdown_table(report: dict) -> str:
    """The report's metrics as a Markdown table (one row per figure)."""
    rows = ["| figure | course | reference | ratio course / reference | better | target |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {m['metric']} | {_cell(m, 'course')} | {_cell(m, 'reference')} | {_ratio(m)} | {m['better']} "
             f"| {_target(m)} |" for m in report["metrics"]]
    return "\n".join(rows)


def performance_rows(report: dict) -> list[str]:
    """The report's rows of the README's Performance table: its ``headline`` figures, the benchmark named once."""
    repeats = f"{report['repeats']} repeat{'s' if report['repeats'] != 1 else ''}"
    rows = []
    for m in (m for m in report["metrics"] if m.get("headline")):
        name = f"{report['summary']} ({repeats})" if not rows else ""
        rows.append(f"| {name} | {m['metric']} | {_cell(m, 'course')} | {_cell(m, 'reference')} | {_ratio(m)} "
                    f"| {_target(m)} |")
    return rows


def performance_table(reports: Sequence[dict]) -> str:
    """The README's Performance table: the headline figures of every report."""
    rows = ["| benchmark | figure | course | reference | ratio | target |", "|---|---|---|---|---|---|"]
    for report in reports:
        rows += performance_rows(report)
    return "\n".join(rows) + "\n"


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


def write_report(report: Report, runs: dict[str, list[dict]], session: Session) -> dict:
    """Render the report with its runs and write ``<name>.json``, ``.md`` and ``.png`` to ``--out-dir``.

    Then rebuild ``SUMMARY.md`` and ``PERFORMANCE.md`` there; returns the JSON record.
    """
    record = render(report, runs, session)
    out_dir = Path(session.args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{report.name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    (out_dir / f"{report.name}.md").write_text(markdown(record))
    if record["curves"]:
        plot(record, out_dir / f"{report.name}.png")
    write_summary(out_dir)
    print(markdown_table(record))
    print(f"wrote {path} (.md, .png)")
    return record


def latest_reports(out_dir: Path) -> list[dict]:
    """The JSON record of every benchmark in ``out_dir``, in the order of ``ORDER``."""
    reports = [json.loads(path.read_text()) for path in Path(out_dir).glob("*.json")]
    reports = [r for r in reports if r.get("schema") == SCHEMA_VERSION]
    return sorted(reports, key=lambda r: (ORDER.index(r["benchmark"]) if r["benchmark"] in ORDER else len(ORDER),
                                          r["benchmark"]))


def write_summary(out_dir: Path) -> Path:
    """``SUMMARY.md``: the latest table of every benchmark in ``out_dir``; ``PERFORMANCE.md``: the README's table."""
    reports = latest_reports(out_dir)
    lines = ["# Benchmark results", "",
             "Course code against reference implementations, run side by side in one process "
             "(interleaved repeats, medians, ratios course / reference). Regenerated by each benchmark run; "
             "see `benchmarks/README.md`.", ""]
    lines += [markdown(report) for report in reports]
    path = Path(out_dir) / "SUMMARY.md"
    path.write_text("\n".join(lines))
    (Path(out_dir) / "PERFORMANCE.md").write_text(performance_table(reports))
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

