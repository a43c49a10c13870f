"""The benchmark harness still runs and still produces its table (values are not checked here:
timing targets belong in the table, never in timed unit tests)."""

import math
import os
import subprocess
import sys

import pytest

from bench import report
from support.paths import REPO as REPO_ROOT



@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return output.read_text(), proc.stdout


def test_smoke_run_writes_the_table_it_prints(smoke_report):
    written, printed = smoke_report
    assert report.parse_table(written) == report.parse_table(printed)


def test_smoke_table_has_every_row_with_numeric_ratios(smoke_report):
    rows = report.parse_table(smoke_report[0])
    names = [name for name, _, _ in rows]
    for batch in (1, 32):
        assert names.count(f"predict mlp batch {batch}") == 3
    assert names.count("import cost (TensorFlow not imported: checked)") == 1
    assert all(math.isfinite(ratio) and ratio > 0 for _, ratio, _ in rows)
    targeted = [result for name, _, result in rows if name == "predict mlp batch 1" and result]
    assert targeted and set(targeted) <= {"PASS", "MISS"}


def test_smoke_report_names_date_machine_and_versions(smoke_report):
    written = smoke_report[0]
    assert "Date: 20" in written
    assert f"Machine: {os.cpu_count()} cores" in written
    for package in ("Python 3.", "tensorflow", "mlflow 3."):
        assert package in written
    assert "| batch | ours: mlflow.pyfunc predict |" in written


@pytest.mark.parametrize(
    ("ours", "baseline", "target", "extra", "expected"),
    [
        (1.0, 1.0, "<= 1.10", True, "PASS"),
        (1.2, 1.0, "<= 1.10", True, "MISS"),
        (1.0, 1.0, "<= 1.10", False, "MISS"),
        (90.0, 100.0, ">= 0.85", True, "PASS"),
        (80.0, 100.0, ">= 0.85", True, "MISS"),
        (5.0, 1.0, "", True, ""),
    ],
)
def test_row_result_compares_the_ratio_with_the_target(ours, baseline, target, extra, expected):
    row = report.Row("m", "ours", ours, "base", baseline, "s", target, extra_check=extra)
    assert row.result == expected
    assert row.ratio == pytest.approx(ours / baseline)


def test_parse_table_reads_back_rendered_rows():
    rows = [
        report.Row("predict x", "pyfunc", 2e-5, "raw", 1e-5, "s", "<= 1.10"),
        report.Row("size", "ours", 3 << 20, "peer", 1 << 20, "bytes"),
    ]
    markdown = report.render(rows, [("Details", "| a | b | c | d | e | f |\n|---|---|---|---|---|---|")],
                             report.environment(), "test", "python -m bench", 1.0)
    assert report.parse_table(markdown) == [("predict x", 2.0, "MISS"), ("size", 3.0, "")]
    assert "20 us (pyfunc)" in markdown and "3 MiB (ours)" in markdown


def test_every_bench_module_imports():
    """--smoke leaves out the serving, spark and folder rows; their modules must still import
    (a test helper they use moved once, and only a full `python -m bench` run showed it)."""
    names = sorted(p.stem for p in (REPO_ROOT / "bench").glob("*.py") if p.stem != "__main__")
    code = "import importlib, sys\nfor n in sys.argv[1:]: importlib.import_module('bench.' + n)"
    proc = subprocess.run(
        [sys.executable, "-c", code, *names], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert "serving" in names and proc.returncode == 0, proc.stderr[-3000:]


def test_spark_rows_render_every_model_the_worker_measured(monkeypatch, tmp_path):
    """The spark_udf rows only run in a full bench (minutes of Spark): their table code runs here
    on a result shaped like ``bench.spark_udf.measure``'s, with made-up seconds."""
    import bench.__main__ as bench_main
    from bench.spark_udf import CTR, MLP, PER_TASK_STEPS

    candidates = ("ours", "ours, no load cache", "hand-written pandas_udf", "mlflow.tensorflow")

    def model(scale):
        seconds = {c: scale * (i + 1) for i, c in enumerate(candidates)}
        return {"rows": {"200000": seconds}, "tasks": {"200000": 10},
                "runs": {"200000": {c: [s] * 3 for c, s in seconds.items()}},
                "max_abs_diff": dict.fromkeys(candidates, 0.0), "bit_identical": dict.fromkeys(candidates, True),
                "per_task_ms": dict.fromkeys(PER_TASK_STEPS, 4.0),
                "two_tasks": {"rows": 200000, "seconds": {"ours": 2.0, "hand-written pandas_udf": 1.0},
                              "runs": {"ours": [2.0], "hand-written pandas_udf": [1.0]}}}

    result = {"models": {MLP: model(1.0), CTR: model(2.0)}}
    monkeypatch.setattr(bench_main, "run_worker", lambda *args, **kwargs: result)
    details = []
    rows = bench_main._spark_rows(str(tmp_path), [200000], details)
    by_label = {(r.measurement, r.baseline_label): r for r in rows}
    assert len(rows) == 8 and len(details) == 2
    target = by_label[(f"spark_udf {CTR}, 200,000 rows (10 tasks)", "hand-written pandas_udf")]
    assert (target.ratio, target.target, target.result) == (pytest.approx(2 / 6), "<= 1.10", "PASS")
    two = by_label[(f"spark_udf {MLP}, 200,000 rows (2 tasks, one per core)", "hand-written pandas_udf")]
    assert two.ratio == pytest.approx(2.0) and two.target == ""
    assert "MLflow's requirements check 4.0 ms" in details[0][0]
    assert "| 200,000 | 2 | 2.00 s | | 1.00 s | |" in details[0][1]
