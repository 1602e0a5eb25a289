"""The benchmarks run, write well-formed reports, and their reference implementations learn.

Every benchmark runs with ``--smoke`` (budgets of a second or two, tiny data) into a temporary
directory; no figure is checked against a speed. What is checked: the report's schema (both
sides, repeats, ratios, versions, load average), the files next to it, that the reference
implementations train (validation loss or accuracy moves the right way, with stated margins),
that the course's models in ``benchmarks/course_models.py`` are the notebooks' definitions, and
that the GPU benchmark skips cleanly without CUDA.
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import harness
from conftest import ROOT

BENCHMARKS = ("transformer_char", "lstm_char", "mnist_cnn", "keras_vs_torch", "gan", "gpt_throughput", "gpu")

SMOKE = ["--smoke", "--repeats", "1"]


def run_benchmark(name: str, out_dir: Path, *extra: str) -> dict:
    module = importlib.import_module(f"benchmarks.{name}")
    argv = [*SMOKE, "--out-dir", str(out_dir), *extra]
    module.main(argv)
    report = json.loads((out_dir / f"{name}.json").read_text())
    check_schema(report, name, out_dir, argv)
    return report


def check_schema(report: dict, name: str, out_dir: Path, argv: list[str]) -> None:
    assert report["schema"] == harness.SCHEMA_VERSION and report["benchmark"] == name
    assert report["smoke"] is True and report["repeats"] == 1
    assert report["command"] == f".venv/bin/python -m benchmarks.{name} {' '.join(argv)}"  # how to run it again
    for side in harness.SIDES:
        assert len(report["runs"][side]) == 1, f"{side}: one run per repeat"
    assert report["metrics"], "no figures"
    assert set(report["ratios"]) == {m["metric"] for m in report["metrics"]}
    assert any(r is not None and math.isfinite(r) and r > 0 for r in report["ratios"].values()), report["ratios"]
    for m in report["metrics"]:
        if m["course"] is not None and m["reference"] not in (None, 0):
            assert m["ratio"] == pytest.approx(m["course"] / m["reference"], rel=1e-12)
    env = report["environment"]
    assert env["threads"] == 1 and env["versions"]["torch"] == torch.__version__
    for when in ("start", "end"):
        load = report["load_average"][when]
        assert load is None or (len(load) == 3 and all(x >= 0 for x in load))
    assert report["wall_s"] > 0
    for suffix in (".md", ".png"):
        assert (out_dir / f"{name}{suffix}").stat().st_size > 0
    assert f"## {report['title']}" in (out_dir / "SUMMARY.md").read_text()
    performance = (out_dir / "PERFORMANCE.md").read_text()
    assert all(row in performance for row in harness.performance_rows(report))


def val_losses(run: dict) -> list[float]:
    return [p["val_loss"] for p in run["points"]]


def test_transformer_char_smoke(tmp_path):
    report = run_benchmark("transformer_char", tmp_path)
    for side in harness.SIDES:
        run = report["runs"][side][0]
        losses = val_losses(run)
        # From ln 65 = 4.17 at step 0; 30 steps of AdamW at lr up to 3e-4 take off at least 0.3 nats.
        assert losses[0] == pytest.approx(math.log(65), abs=0.15), side
        assert losses[-1] < losses[0] - 0.3, f"{side} did not learn: {losses}"
        assert run["tokens_per_s"] > 0
    assert {"val loss at 1 s of training", "training tokens/s"} <= set(report["ratios"])


def test_lstm_char_smoke(tmp_path):
    report = run_benchmark("lstm_char", tmp_path)
    for side in harness.SIDES:
        losses = val_losses(report["runs"][side][0])
        assert losses[-1] < losses[0] - 0.2, f"{side} did not learn: {losses}"  # from about ln 65 = 4.17


def test_mnist_cnn_smoke(tmp_path):
    report = run_benchmark("mnist_cnn", tmp_path)
    reference = report["runs"]["reference"][0]
    # Ten classes: 10% by chance; a second or two of Adadelta on 512 images gets well past 30%.
    assert reference["best_test_acc"] > 0.3, reference["points"]
    assert reference["last_train_loss"] < reference["first_train_loss"]
    assert all(f"seconds_to_{t:.3f}" in reference for t in (0.99, 0.993))


def test_keras_vs_torch_smoke(tmp_path):
    report = run_benchmark("keras_vs_torch", tmp_path, "--epochs", "2")
    for side in harness.SIDES:
        run = report["runs"][side][0]
        assert run["cnn_epoch_s"] > 0 and run["mlp_epoch_s"] > 0
        assert run["last_train_loss"] < run["first_train_loss"], side  # 2 epochs of Adam on 256 images


def test_gan_smoke(tmp_path):
    report = run_benchmark("gan", tmp_path)
    baselines = report["settings"]["frechet_baselines"]
    # The evaluator tells real from noise: held-out real images are far closer than uniform noise.
    assert baselines["real held-out images"] < 0.5 * baselines["uniform noise"]
    for side in harness.SIDES:
        run = report["runs"][side][0]
        assert run["steps"] >= 1 and math.isfinite(run["frechet"]) and run["seconds_per_epoch"] > 0


def test_gpt_throughput_smoke(tmp_path):
    report = run_benchmark("gpt_throughput", tmp_path)
    scratch, sdpa = (report["runs"][side][0]["first_loss"] for side in harness.SIDES)
    assert scratch == pytest.approx(sdpa, abs=1e-4)  # the same weights and batch through two attention kernels


def test_tf_dcgan_reference_trains():
    from benchmarks.reference import tf_dcgan

    torch.manual_seed(0)
    real = torch.rand(64, 1, 28, 28) * 0.2 - 1  # (64, 1, 28, 28): dark images, easy to tell from G's first outputs
    cfg = tf_dcgan.Config(batch_size=16, lr=1e-3)
    losses = []
    tf_dcgan.train(real, cfg, after_step=lambda G, step, logs: losses.append(logs["disc_loss"]) or step >= 8)
    # The discriminator starts near 2 ln 2 = 1.39 and learns to separate the two within 8 steps.
    assert losses[0] > 1.0 and min(losses[-3:]) < losses[0] - 0.3, losses


def test_gpu_benchmark_skips_without_cuda(tmp_path, capsys, monkeypatch):
    from benchmarks import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main([*SMOKE, "--out-dir", str(tmp_path)]) is None
    assert "skipped" in capsys.readouterr().out
    assert not any(tmp_path.iterdir()), "the skipped benchmark must write nothing"


def _notebook_definitions(path: Path) -> dict[str, str]:
    import nbformat

    found = {}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # IPython magics
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found[node.name] = ast.dump(node)
    return found


def test_course_models_are_the_notebooks_definitions():
    from benchmarks import course_models

    ours = {node.name: ast.dump(node) for node in ast.parse(Path(course_models.__file__).read_text()).body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    for notebook, names in course_models.NOTEBOOK_DEFINITIONS.items():
        theirs = _notebook_definitions(ROOT / notebook)
        for name in names:
            assert name in theirs, f"{notebook} no longer defines {name}: update benchmarks/course_models.py"
            assert ours[name] == theirs[name], (f"benchmarks/course_models.py:{name} differs from {notebook}; "
                                                "copy the notebook's definition")


def test_harness_median_counts_not_reached_as_largest():
    assert harness.median([3.0, None, 1.0]) == 3.0
    assert harness.median([None, None, 1.0]) is None
    assert harness.median([1.0, 2.0]) == 1.5
    assert harness.median([1.0, None]) is None


def test_harness_interleave_alternates_the_order():
    calls = []
    runs = harness.interleave(lambda side, r: calls.append((side, r)) or {}, 3, log=lambda _: None)
    assert calls == [("course", 0), ("reference", 0), ("reference", 1), ("course", 1), ("course", 2),
                     ("reference", 2)]
    assert [r["repeat"] for r in runs["course"]] == [0, 1, 2]
    assert harness.metric("x", 2.0, 4.0)["ratio"] == 0.5
    assert harness.metric("x", None, 4.0)["ratio"] is None


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_runs_as_a_module_of_the_installed_package(name, tmp_path):
    # From a folder that holds no `benchmarks`: the package and its references come from the install.
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--smoke" in result.stdout and "--out-dir" in result.stdout


def test_the_benchmarks_set_no_import_path():
    for path in [*sorted((ROOT / "benchmarks").rglob("*.py")), Path(__file__)]:
        calls = [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Attribute) and node.attr in ("path", "meta_path")
                 and isinstance(node.value, ast.Name) and node.value.id == "sys"]
        assert not calls, f"{path.name} changes sys.path: the benchmarks import the installed packages"


def test_the_renderer_reproduces_every_recorded_results_file():
    """Each results/<name>.md is the renderer's output for its JSON, byte for byte (records without ``target_met``)."""
    recorded = sorted((harness.RESULTS).glob("*.json"))
    assert recorded, "no recorded results"
    for path in recorded:
        assert harness.markdown(json.loads(path.read_text())) == path.with_suffix(".md").read_text(), path.name


def _runs(course: list, reference: list, key: str = "x") -> dict:
    return {"course": [{key: v, "repeat": r} for r, v in enumerate(course)],
            "reference": [{key: v, "repeat": r} for r, v in enumerate(reference)]}


@pytest.mark.parametrize("better, course, reference, target, rendered", [
    ("lower", [0.9], [1.0], 1.0, "| 0.90 | lower | <= 1.00 (met) |"),
    ("lower", [1.2], [1.0], 1.0, "| 1.20 | lower | <= 1.00 (not met) |"),
    ("higher", [1.2], [1.0], 1.1, "| 1.20 | higher | >= 1.10 (met) |"),
    ("higher", [1.0], [1.0], 1.1, "| 1.00 | higher | >= 1.10 (not met) |"),
    ("lower", [None], [270.0], 0.25, "| n/a | lower | <= 0.25 (not met) |"),  # the course never got there
    ("lower", [50.0], [None], 0.25, "| n/a | lower | <= 0.25 (met) |"),  # the reference never got there
    ("higher", [None], [0.9], 1.0, "| n/a | higher | >= 1.00 (not measured) |"),
])
def test_a_figure_says_whether_its_ratio_meets_the_target(better, course, reference, target, rendered):
    row = harness.Figure("x", "x", better=better, target=target).measure(_runs(course, reference))
    assert harness.markdown_table({"metrics": [row]}).splitlines()[-1].endswith(rendered)


def test_a_figure_gives_medians_with_their_spread_and_labels():
    runs = _runs([3.0, 1.0, 2.0], [10.0, None, 12.0])
    for side in runs:
        for r, epoch in zip(runs[side], (2, 4, 3)):
            r["epoch"] = epoch
    row = harness.Figure("seconds", "x", unit="s", detail=("epoch", "epoch {:g}"), sides=("ours", "reference"))
    line = harness.markdown_table({"metrics": [row.measure(runs)]}).splitlines()[-1]
    # A run that did not get there counts as larger than any time: the spread's top is "not reached".
    assert line == "| seconds | 2 s [1-3] (ours, epoch 3) | 12 s [10-not reached] (epoch 3) | 0.17 | lower |  |"
    single = harness.Figure("loss", "x", absent=(None, "published 1.8857")).measure(_runs([1.5], [None]))
    assert harness.markdown_table({"metrics": [single]}).splitlines()[-1] == (
        "| loss | 1.5 | n/a (published 1.8857) | n/a | lower |  |")  # one run: no spread


def test_the_readme_rows_name_the_benchmark_once_and_hold_only_headline_figures():
    runs = _runs([1.0, 1.1, 0.9], [2.0, 2.0, 2.0])
    report = {"summary": "model vs recipe", "repeats": 3,
              "metrics": [harness.Figure("tokens/s", "x", unit="tok/s", better="higher", target=0.5,
                                         headline=True).measure(runs),
                          harness.Figure("not in the README", "x").measure(runs),
                          harness.Figure("seconds", "x", unit="s", headline=True).measure(runs)]}
    assert harness.performance_rows(report) == [
        "| model vs recipe (3 repeats) | tokens/s | 1 tok/s [0.9-1.1] | 2 tok/s | 0.50 | >= 0.50 (met) |",
        "|  | seconds | 1 s [0.9-1.1] | 2 s | 0.50 |  |"]
