"""The runnable examples: each ``examples/guide_*.py`` (the guide's scenarios),
``examples/evaluate_classifier.py`` and ``examples/evaluate_regressor.py`` exits 0 in CI."""

import glob
import os
import re
import subprocess
import sys

import pytest
from support.paths import REPO

EXAMPLES_DIR = str(REPO / "examples")
GUIDE_EXAMPLES = sorted(glob.glob(os.path.join(EXAMPLES_DIR, "guide_*.py")))
EVALUATE_EXAMPLE = os.path.join(EXAMPLES_DIR, "evaluate_classifier.py")
EVALUATE_REGRESSOR_EXAMPLE = os.path.join(EXAMPLES_DIR, "evaluate_regressor.py")
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def finished_examples(tmp_path_factory):
    """Runs every guide example at once (they are independent) in its own work folder."""
    running = {}
    for script in GUIDE_EXAMPLES + [EVALUATE_EXAMPLE, EVALUATE_REGRESSOR_EXAMPLE]:
        work_dir = tmp_path_factory.mktemp(os.path.basename(script)[:-3])
        running[script] = subprocess.Popen(
            [sys.executable, script, str(work_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(work_dir),
        )
    results = {}
    try:
        for script, process in running.items():
            output, _ = process.communicate(timeout=TIMEOUT_S)
            results[script] = (process.returncode, output)
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def test_the_three_guide_scenarios_are_examples():
    assert [os.path.basename(p) for p in GUIDE_EXAMPLES] == [
        "guide_checkpoint.py",
        "guide_keras_h5.py",
        "guide_session_builder.py",
    ]


@pytest.mark.parametrize("script", GUIDE_EXAMPLES, ids=os.path.basename)
def test_guide_example_runs(script, finished_examples):
    returncode, output = finished_examples[script]
    assert returncode == 0, output
    assert "compatible EAS processors: tensorflow_cpu_1.12" in output, output


def test_evaluate_example_gets_the_keras_models_accuracy(finished_examples):
    returncode, output = finished_examples[EVALUATE_EXAMPLE]
    assert returncode == 0, output
    # The example exits 1 unless evaluate's accuracy equals the Keras model's own.
    assert re.search(r"accuracy_score (0\.\d+) \(from the Keras model: \1\)", output), output
    for form in ("named column", "feature columns", "arrays"):
        assert re.search(rf"{form}: accuracy_score (0\.\d+) \(from the Keras model: \1\)", output), output


def test_evaluate_regressor_example_gets_the_keras_models_error(finished_examples):
    returncode, output = finished_examples[EVALUATE_REGRESSOR_EXAMPLE]
    assert returncode == 0, output
    # The example exits 1 unless evaluate's mean absolute error equals the Keras model's own
    # (within 1e-5 relative: evaluate averages in float64, the check in float32).
    for form in ("DataFrame", "arrays"):
        assert re.search(rf"{form}: mean_absolute_error \d+\.\d+ \(from the Keras model: \d+\.\d+\)", output), output
    assert "predict shapes: (5, 1) by default, (5,) with output='values'" in output, output
