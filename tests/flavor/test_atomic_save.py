"""Atomic saves: an exception or a SIGKILL in the middle of an export leaves nothing that loads.

``save_model`` writes into ``.<name>.partial-XXXX`` beside the target, writes MLmodel there as
``MLmodel.partial``, and only when the environment files are written renames it to ``MLmodel``
and the folder into place; both loaders refuse a ``.partial-`` folder by its name.
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

    # 4 x units^2 float32 weights: at 2048, ~64 MiB take long enough to write to be interrupted.
    units = int(sys.argv[2])
    keras.utils.set_random_seed(0)
    inp = keras.Input((units,), name="x")
    hidden = keras.layers.Dense(units, name="a")(inp)
    hidden = keras.layers.Dense(units, name="b")(hidden)
    hidden = keras.layers.Dense(units, name="c")(hidden)
    hidden = keras.layers.Dense(units, name="d")(hidden)
    model = keras.Model(inp, hidden)
    print("saving", flush=True)
    mes.save_model(model, sys.argv[1])
    print("saved", flush=True)
    """
)


# Moments of a save, each seen from outside as a path appearing in the temporary folder, and
# the model size (units) that leaves a window wide enough to kill in.
_KILL_MOMENTS = {
    "writing the variables": ("savedmodel/variables", 2048),
    "after the SavedModel is written": ("savedmodel/saved_model.pb", 512),
    "writing the environment files": ("MLmodel.partial", 256),
}


def _assert_not_a_model(path):
    """Neither loader accepts ``path``: the state a kill leaves is never taken for a model."""
    import mlflow.pyfunc

    with pytest.raises(MlflowException, match="did not finish|Could not find an \"MLmodel\""):
        mes.load_model(str(path))
    with pytest.raises(MlflowException, match="did not finish|Could not find an \"MLmodel\""):
        mlflow.pyfunc.load_model(str(path))


@pytest.mark.parametrize("moment", sorted(_KILL_MOMENTS))
def test_sigkill_at_any_moment_leaves_nothing_that_loads(tmp_path, moment):
    target = tmp_path / "model"
    script = tmp_path / "save.py"
    script.write_text(_KILLED_SAVE)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    seen, units = _KILL_MOMENTS[moment]
    proc = subprocess.Popen(
        [sys.executable, str(script), str(target), str(units)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    marker = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            partials = _partials(tmp_path)
            if partials and os.path.exists(tmp_path / partials[0] / seen):
                marker = tmp_path / partials[0]
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        assert marker is not None, f"the save never reached {moment}: {proc.communicate(timeout=30)[0][-2000:]!r}"
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    # A kill is asynchronous: if it landed after the final rename, the model is complete.
    if target.exists():
        assert _partials(tmp_path) == []
        assert mes.load_model(str(target), device="cpu") is not None
        return
    leftovers = _partials(tmp_path)
    assert leftovers == [marker.name]
    assert not (marker / "MLmodel").exists()  # it only gets that name at the very end
    _assert_not_a_model(marker)
    # The target path is still free: a new save succeeds beside the leftover.
    import keras

    inp = keras.Input((2,), name="x")
    small = keras.Model(inp, keras.layers.Dense(1)(inp))
    mes.save_model(small, target)
    x = np.ones((1, 2), np.float32)
    outputs = mes.load_model(str(target), device="cpu").predict(x)
    np.testing.assert_allclose(next(iter(outputs.values())), small(x).numpy(), rtol=1e-5)


def test_a_kill_between_the_last_two_renames_leaves_a_folder_no_loader_takes(tmp_path, mlp):
    """The one state with a complete MLmodel in the temporary folder: MLmodel renamed, folder
    not yet. Both loaders refuse the ``.partial-`` folder by its name."""
    mes.save_model(mlp, tmp_path / "done")
    leftover = tmp_path / ".model.partial-abc123"
    os.rename(tmp_path / "done", leftover)
    _assert_not_a_model(leftover)
