"""Atomic saves: an exception or a SIGKILL in the middle of an export leaves no model folder.

``save_model`` writes into ``.<name>.partial-XXXX`` beside the target and renames it into place
only when the MLmodel file and the environment files are written.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes


def _partials(parent, name="model"):
    return sorted(p for p in os.listdir(parent) if p.startswith(f".{name}.partial-"))


class _Switch:
    fail = False


@pytest.fixture(scope="module")
def failing_trace_model(tf):
    """A built Keras model whose layer raises once ``_Switch.fail`` is set (i.e. while tracing)."""
    import keras

    class Flaky(keras.layers.Layer):
        def call(self, x):
            if _Switch.fail:
                raise RuntimeError("layer exploded while tracing")
            return x * 2.0

    inp = keras.Input((4,), name="image")
    return keras.Model(inp, Flaky(name="flaky")(inp))


@pytest.fixture(scope="module")
def new_op_model(tf):
    """A model using ``Erfinv``, an op TF 1.12 does not have."""
    import keras

    class Erfinv(keras.layers.Layer):
        def call(self, x):
            return tf.math.erfinv(x * 0.5)

    inp = keras.Input((4,), name="image")
    return keras.Model(inp, Erfinv(name="erfinv")(inp))


def test_exception_while_tracing_leaves_nothing(tmp_path, failing_trace_model):
    _Switch.fail = True
    try:
        with pytest.raises(MlflowException, match=r"(?s)Tracing the Keras model .* failed: .*layer exploded while tracing"):
            mes.save_model(failing_trace_model, tmp_path / "model")
    finally:
        _Switch.fail = False
    assert os.listdir(tmp_path) == []


def test_incompatible_eas_processor_leaves_nothing(tmp_path, new_op_model):
    with pytest.raises(MlflowException, match=r"(?s)cannot run on EAS processor 'tensorflow_cpu_1.12'.*op Erfinv does not exist in TF 1.12"):
        mes.save_model(new_op_model, tmp_path / "model", eas_processor="tensorflow_cpu_1.12")
    assert os.listdir(tmp_path) == []


def test_exception_after_the_savedmodel_is_written_leaves_nothing(tmp_path, mlp):
    # The environment files are the last step: the SavedModel is complete in the temp folder.
    with pytest.raises(FileNotFoundError, match="no-such-conda.yaml"):
        mes.save_model(mlp, tmp_path / "model", conda_env=str(tmp_path / "no-such-conda.yaml"))
    assert os.listdir(tmp_path) == []


def test_failed_save_into_an_existing_empty_folder_keeps_it_empty(tmp_path, new_op_model):
    (tmp_path / "model").mkdir()
    with pytest.raises(MlflowException, match="cannot run on EAS processor"):
        mes.save_model(new_op_model, tmp_path / "model", eas_processor="tensorflow_cpu_1.12")
    assert os.listdir(tmp_path) == ["model"]
    assert os.listdir(tmp_path / "model") == []


def test_non_empty_target_is_refused_untouched(tmp_path, mlp):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("mine")
    with pytest.raises(MlflowException, match="already exists and is not empty"):
        mes.save_model(mlp, tmp_path / "model")
    assert os.listdir(tmp_path) == ["model"]
    assert (tmp_path / "model" / "keep.txt").read_text() == "mine"


_KILLED_SAVE = textwrap.dedent(
    """
    import sys
    import keras
    import mlflow_eas_savedmodel as mes

    # ~64 MiB of weights: writing and hashing them takes long enough to be interrupted.
    keras.utils.set_random_seed(0)
    inp = keras.Input((2048,), name="x")
    hidden = keras.layers.Dense(2048, name="a")(inp)
    hidden = keras.layers.Dense(2048, name="b")(hidden)
    hidden = keras.layers.Dense(2048, name="c")(hidden)
    hidden = keras.layers.Dense(2048, name="d")(hidden)
    model = keras.Model(inp, hidden)
    print("saving", flush=True)
    mes.save_model(model, sys.argv[1])
    print("saved", flush=True)
    """
)


def test_sigkill_while_writing_leaves_no_model_folder(tmp_path):
    target = tmp_path / "model"
    script = tmp_path / "save.py"
    script.write_text(_KILLED_SAVE)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    marker = None
    try:
        deadline = time.monotonic() + 240
        # The variables folder appears right before the weights are written: kill then.
        while time.monotonic() < deadline and proc.poll() is None:
            partials = _partials(tmp_path)
            if partials and os.path.isdir(tmp_path / partials[0] / "savedmodel" / "variables"):
                marker = tmp_path / partials[0]
                break
            time.sleep(0.005)
        assert marker is not None, f"no export started: {proc.communicate(timeout=30)[0][-2000:]!r}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    assert not target.exists()
    # The leftover temp folder is unavoidable after a KILL, but it is never taken for a model:
    # it has no MLmodel (written last), its name is not the target's, and loading it fails.
    leftovers = _partials(tmp_path)
    assert leftovers == [marker.name]
    assert not (marker / "MLmodel").exists()
    with pytest.raises(MlflowException, match="was not saved by mlflow_eas_savedmodel"):
        mes.load_model(str(marker))
    # The target path is still free: a new save succeeds beside the leftover.
    import keras

    inp = keras.Input((2,), name="x")
    small = keras.Model(inp, keras.layers.Dense(1)(inp))
    mes.save_model(small, target)
    x = np.ones((1, 2), np.float32)
    outputs = mes.load_model(str(target), device="cpu").predict(x)
    np.testing.assert_allclose(next(iter(outputs.values())), small(x).numpy(), rtol=1e-5)
