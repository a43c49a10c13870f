"""Device resolution and placement. No GPU here: GPU strings are checked for their errors, and
placement is proven on logical CPU devices (a session with two CPU devices, the graph on /CPU:1)."""

import subprocess
import sys
import textwrap

import pytest
from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.model import resolve_device


@pytest.mark.parametrize(
    ("spelling", "device"),
    [
        ("cpu", "/device:CPU:0"),
        ("CPU", "/device:CPU:0"),
        ("/CPU:1", "/device:CPU:1"),
        ("/device:CPU:0", "/device:CPU:0"),
        ("cpu:2", "/device:CPU:2"),
    ],
)
def test_cpu_spellings(spelling, device, tf):
    assert resolve_device(spelling) == device


def test_default_is_cpu_without_gpu_and_env_overrides(monkeypatch, tf):
    assert not tf.config.list_physical_devices("GPU")
    monkeypatch.delenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", raising=False)
    assert resolve_device(None) == "/device:CPU:0"
    monkeypatch.setenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", "cpu:1")
    assert resolve_device(None) == "/device:CPU:1"


@pytest.mark.parametrize("spelling", ["gpu", "/GPU:1", "cuda:0"])
def test_gpu_without_gpu_is_a_clear_error(spelling, tf):
    with pytest.raises(MlflowException, match=r"visible GPU\(s\). Load with device='cpu', or install the GPU build"):
        resolve_device(spelling)


def test_unknown_device_string(tf):
    with pytest.raises(MlflowException, match="Unknown device 'tpu'. Use 'cpu', 'gpu', 'gpu:1'"):
        resolve_device("tpu")


def test_graph_runs_on_the_requested_logical_cpu(tmp_path, mlp, x4):
    """Loads on /CPU:1 and reads the devices the kernels actually ran on from the step stats."""
    import mlflow_eas_savedmodel as mes

    mes.save_model(mlp, tmp_path / "m")
    script = textwrap.dedent(
        f"""
        import numpy as np
        import mlflow_eas_savedmodel as mes
        from mlflow_eas_savedmodel._tensorflow import import_tensorflow
        tf = import_tensorflow()
        for device in ("/CPU:1", "cpu"):
            handle = mes.load_model({str(tmp_path / "m")!r}, device=device)
            opts = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
            meta = tf.compat.v1.RunMetadata()
            handle.session.run("scores:0", {{"image:0": np.zeros((1, 4), np.float32)}},
                               options=opts, run_metadata=meta)
            # Feeds and fetches pass through the client's /CPU:0; the model's kernels must not.
            ran = {{n.node_name: d.device.lower()[-5:] for d in meta.step_stats.dev_stats
                   for n in d.node_stats if n.node_name.startswith(("functional", "hidden", "scores"))}}
            print(device, sorted(set(ran.values())), len(ran))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines["/CPU:1"].startswith("['cpu:1'] ")
    assert lines["cpu"].startswith("['cpu:0'] ")
    assert int(lines["cpu"].split()[-1]) >= 4  # the matmuls and bias adds were traced
