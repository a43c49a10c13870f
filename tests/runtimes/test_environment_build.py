"""Building a runtime environment: stages logged with elapsed seconds, and bounded by a timeout.

A real build into an empty cache (``MLFLOW_EAS_SAVEDMODEL_CACHE``) with the real CPython 3.7,
stopped by a timeout of a few seconds: the venv is created, the wheel install starts and is
killed, the partial environment is removed, and the error says how to give it more time.
"""

import logging
import os
import re

import pytest
from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.runtimes import environments, venvs


@pytest.fixture
def python37():
    try:
        return venvs.find_interpreter("3.7")
    except MlflowException as e:
        pytest.skip(f"no CPython 3.7 here: {e.message}")


def test_a_build_logs_its_stages_and_stops_at_the_timeout(python37, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(venvs.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(venvs, "PROGRESS_INTERVAL_S", 1.0)
    caplog.set_level(logging.INFO, logger=environments.__name__)
    with pytest.raises(MlflowException) as stopped:
        environments.ensure_runtime("1.15", timeout=15)
    path = environments.runtime_dir("1.15")
    message = stopped.value.message
    assert message.startswith("Building the TensorFlow 1.15 runtime environment did not finish within the timeout (")
    assert "the partial build is discarded and redone next time. Pass a larger timeout (check-runtime --timeout SECONDS" in message
    assert "`python -m mlflow_eas_savedmodel.runtimes.environments 1.15`" in message
    assert not os.path.exists(path)  # nothing half-built is left to be mistaken for an environment

    lines = [r.getMessage() for r in caplog.records if r.name == environments.__name__]
    assert lines[0] == f"TF 1.15 runtime: building the environment (first use; cached afterwards under {path}) (0 s elapsed)"
    assert re.fullmatch(rf"TF 1\.15 runtime: creating the venv in {re.escape(path)} with {re.escape(python37)} \(\d+ s elapsed\)", lines[1]), lines
    assert any(line.startswith("TF 1.15 runtime: installing tensorflow-cpu==1.15.0, numpy==1.16.6, protobuf==3.20.3") for line in lines), lines
    stills = [line for line in lines if line.startswith("TF 1.15 runtime: still ")]
    assert stills and all(line.endswith(" s elapsed)") for line in stills), lines
    elapsed = [int(line.rsplit("(", 1)[1].split()[0]) for line in lines]
    assert elapsed == sorted(elapsed) and elapsed[-1] <= 16, lines


def test_check_runtime_cli_prints_the_build_stages_on_stderr(python37, tmp_path, mlp):
    import subprocess
    import sys

    import mlflow_eas_savedmodel as mes

    mes.save_model(mlp, tmp_path / "model")
    env = {**os.environ, venvs.CACHE_ENV_VAR: str(tmp_path / "cache")}
    script = os.path.join(os.path.dirname(sys.executable), "mlflow-eas-savedmodel")
    proc = subprocess.run([script, "check-runtime", "-m", str(tmp_path / "model"), "--timeout", "15"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    path = os.path.join(str(tmp_path / "cache"), "runtimes", "tf-1.15")
    assert f"TF 1.15 runtime: building the environment (first use; cached afterwards under {path})" in proc.stderr
    assert f"TF 1.15 runtime: creating the venv in {path} with {python37}" in proc.stderr
    assert "Building the TensorFlow 1.15 runtime environment did not finish within the timeout (" in proc.stderr
