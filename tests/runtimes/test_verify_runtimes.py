"""``save_model/log_model(..., verify="runtimes")``: every claim run in its real runtime at save.

The model is a real false claim found by probing the old wheels: ``MatMul`` on int64 is in
TF 1.12's op registry (so the static check claims 1.12) but 1.12 registers no int64 kernel
("No OpKernel was registered to support Op 'MatMul'"); 1.15 and later run it.
"""

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.registry_tags import require_passing_checks
from mlflow_eas_savedmodel.verify_runtimes import SAVE_VERIFY_ENV
from support.mlmodel import read_flavor

X = np.arange(8, dtype=np.int64).reshape(2, 4)


def _int64_matmul_session(tf):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.int64, [None, 4], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.arange(12, dtype=np.int64).reshape(4, 3), use_resource=False)
        y = tf.identity(tf.matmul(x, w), name="y")
        sess = tf.compat.v1.Session(graph=graph)
        sess.run(tf.compat.v1.global_variables_initializer())
    return sess, x, y


def _conf(path):
    return read_flavor(path)


@pytest.mark.runtime
def test_log_model_with_runtime_verification_drops_the_false_claim_and_tags_the_version(
    tf, tracking_uri, monkeypatch
):
    """Set once for a team ($MLFLOW_EAS_SAVEDMODEL_SAVE_VERIFY=runtimes), default verify=True."""
    import mlflow

    monkeypatch.setenv(SAVE_VERIFY_ENV, "runtimes")
    sess, x, y = _int64_matmul_session(tf)
    with sess, mlflow.start_run():
        info = mes.log_model(sess, name="model", inputs={"x": x}, outputs={"y": y}, input_example={"x": X},
                             registered_model_name="int64_matmul")
    local = mlflow.artifacts.download_artifacts(info.model_uri)
    conf = _conf(local)
    assert "tensorflow_cpu_1.12" not in conf["eas_processors"]
    assert "tensorflow_gpu_1.12" not in conf["eas_processors"]
    assert {"tensorflow_cpu_1.15", "tensorflow_cpu_2.3", "tensorflow_cpu_2.7"} <= set(conf["eas_processors"])
    (why,) = conf["eas_incompatibilities"]["1.12"]
    assert why.startswith("runtime check: failed: C++ loader: ")
    assert "No OpKernel was registered to support Op 'MatMul'" in why
    record = conf["verification"]["runtimes"]
    assert list(record) == ["1.12", "1.14", "1.15", "2.3", "2.4", "2.7"]  # every static claim ran
    assert record["1.15"]["check"].startswith("passed: max abs diff 0 (TF 1.15.0 wheel")
    assert record["1.15"]["processors"] == ["tensorflow_cpu_1.15"]
    assert record["1.12"]["check"].startswith("failed: ")
    assert all(isinstance(r["seconds"], float) for r in record.values())
    assert conf["verification"]["run"]["signatures"]["serving_default"]["result"] == "matches the source"

    client = MlflowClient()
    tags = client.get_model_version("int64_matmul", "1").tags
    assert tags["eas.check.tensorflow_cpu_1.15"].startswith("passed")
    assert tags["eas.check.tensorflow_cpu_1.12"].startswith("failed")
    assert "tensorflow_cpu_1.12" not in tags["eas.processors"]
    require_passing_checks(client, "int64_matmul", "1", ["tensorflow_cpu_1.15", "tensorflow_cpu_2.3"])
    with pytest.raises(MlflowException, match="eas.check.tensorflow_cpu_1.12: failed"):
        require_passing_checks(client, "int64_matmul", "1", ["tensorflow_cpu_1.12"])
    # The served model answers like the source.
    np.testing.assert_array_equal(
        mes.load_model(local, device="cpu").predict({"x": X})["y"], X @ np.arange(12).reshape(4, 3)
    )


@pytest.mark.runtime
def test_required_processor_that_fails_in_its_runtime_fails_the_save_and_leaves_nothing(tf, tmp_path):
    sess, x, y = _int64_matmul_session(tf)
    path = tmp_path / "m"
    with sess, pytest.raises(MlflowException) as info:
        mes.save_model(sess, str(path), inputs={"x": x}, outputs={"y": y}, verify="runtimes",
                       eas_processor="tensorflow_cpu_1.12")
    msg = info.value.message
    assert msg.startswith("eas_processor='tensorflow_cpu_1.12': the saved model does not pass in the real TF 1.12 runtime (failed: C++ loader:")
    assert "No OpKernel was registered to support Op 'MatMul'" in msg
    assert "Nothing was saved. Save without eas_processor=" in msg
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_a_bad_save_verify_variable_is_refused_before_anything_is_saved(tf, tmp_path, monkeypatch, mlp):
    monkeypatch.setenv(SAVE_VERIFY_ENV, "all")
    with pytest.raises(MlflowException) as info:
        mes.save_model(mlp, str(tmp_path / "m"))
    assert info.value.message == (
        "$MLFLOW_EAS_SAVEDMODEL_SAVE_VERIFY='all' is not valid. Set it to 'runtimes' (run every saved "
        "model in the claimed EAS runtimes) or unset it."
    )
    assert list(tmp_path.iterdir()) == []


def test_verify_names_the_runtimes_mode(tf, tmp_path, mlp):
    with pytest.raises(MlflowException, match="'runtimes' \\(also run it in the real runtime of every claimed EAS processor\\)"):
        mes.save_model(mlp, str(tmp_path / "m"), verify="runtime")
