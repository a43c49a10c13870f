"""The post-save check: what a save claims has been loaded and run first (``verify.py``).

Every source's artifact is run in TensorFlow 2.21's TF1 loader and compared with the source's own
outputs; what ran is recorded in the MLmodel. A broken artifact (variables that do not match
``variables/``, answers that differ from the source) fails the save and leaves nothing on disk.
"""

import os

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import Model

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import verify


def _conf(path):
    return Model.load(path).flavors[mes.FLAVOR_NAME]


def _partials(parent):
    return [p for p in os.listdir(parent) if ".partial-" in p]


def test_keras_save_runs_on_the_input_example_and_records_it(tmp_path, mlp, x4):
    path = str(tmp_path / "model")
    mes.save_model(mlp, path, input_example=x4)
    run = _conf(path)["verification"]["run"]
    assert _conf(path)["verification"]["static"] == "ok"
    assert run["tensorflow"].startswith("2.")
    (result,) = run["signatures"].values()
    assert result["inputs"] == "input example" and result["result"] == "matches the source"
    assert result["max_abs_diff"] <= 1e-6


def test_without_an_example_inputs_are_synthesised(tmp_path, mlp):
    path = str(tmp_path / "model")
    mes.save_model(mlp, path)
    (result,) = _conf(path)["verification"]["run"]["signatures"].values()
    assert result["inputs"] == "synthesised" and result["result"] == "matches the source"


@pytest.fixture(scope="module")
def clock_model(tf):
    import keras

    class Noisy(keras.layers.Layer):
        def call(self, x):
            # A clock on the serving path: no two runs answer alike (random ops would, being
            # seeded by the global seed another test set).
            tick = tf.cast(tf.math.floormod(tf.timestamp() * 1e4, 1.0), x.dtype)
            return x + tick

    inp = keras.Input((4,), name="x")
    return keras.Model(inp, Noisy(name="y")(inp))


def test_an_artifact_that_answers_differently_fails_and_leaves_nothing(tmp_path, clock_model):
    with pytest.raises(MlflowException) as e:
        mes.save_model(clock_model, str(tmp_path / "model"))
    message = e.value.message
    assert "Verification failed: SignatureDef 'serving_default'" in message
    assert "answers differently from the source model on the synthesised inputs" in message
    assert "output 'y': max abs diff" in message and "exceeds" in message
    assert "verify='static'" in message
    assert os.listdir(tmp_path) == []


def test_static_and_off_skip_the_run(tmp_path, clock_model):
    mes.save_model(clock_model, str(tmp_path / "static"), verify="static")
    assert _conf(str(tmp_path / "static"))["verification"] == {
        "static": "ok",
        "run": "skipped (verify='static')",
    }
    mes.save_model(clock_model, str(tmp_path / "off"), verify=False)
    assert _conf(str(tmp_path / "off"))["verification"]["static"] == "skipped (verify=False)"


def test_a_bad_verify_value_is_refused(tmp_path, mlp):
    with pytest.raises(MlflowException, match=r"verify='yes' is not valid\. Use True"):
        mes.save_model(mlp, str(tmp_path / "model"), verify="yes")
    assert os.listdir(tmp_path) == []


def test_large_variables_skip_the_run(tmp_path, mlp, monkeypatch):
    monkeypatch.setenv(verify.MAX_BYTES_ENV, "100")
    path = str(tmp_path / "model")
    mes.save_model(mlp, path)
    run = _conf(path)["verification"]["run"]
    assert run.startswith("skipped: variables are ") and "above the 100 bytes" in run


def test_static_check_catches_variables_that_do_not_match_the_bundle(tmp_path, tf, mlp):
    from tensorflow.core.protobuf import saved_model_pb2

    path = str(tmp_path / "model")
    mes.save_model(mlp, path)
    export_dir = os.path.join(path, "savedmodel")
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        meta_graph_def = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0]
    verify.check_static(export_dir, meta_graph_def)
    # Rewrite the bundle with one tensor of another shape: what issue 11's scalars looked like.
    prefix = os.path.join(export_dir, "variables", "variables")
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
    values = {n: reader.get_tensor(n) for n in names}
    values[names[0]] = values[names[0]].reshape(-1)[:1]
    for f in os.listdir(os.path.dirname(prefix)):
        os.remove(os.path.join(os.path.dirname(prefix), f))
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[values[n] for n in names])
    with pytest.raises(MlflowException) as e:
        verify.check_static(export_dir, meta_graph_def)
    assert "its variables do not match variables/" in e.value.message
    assert f"in variables/ is float32[1]" in e.value.message


def test_static_check_catches_a_signature_tensor_missing_from_the_graph(tmp_path, mlp):
    from tensorflow.core.protobuf import saved_model_pb2

    path = str(tmp_path / "model")
    mes.save_model(mlp, path)
    export_dir = os.path.join(path, "savedmodel")
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        meta_graph_def = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0]
    meta_graph_def.signature_def["serving_default"].outputs["scores"].name = "gone:0"
    with pytest.raises(MlflowException, match=r"SignatureDef 'serving_default': output 'scores' names 'gone:0'"):
        verify.check_static(export_dir, meta_graph_def)


def test_verify_names_the_signature_and_the_difference(tmp_path, mlp, x4):
    from tensorflow.core.protobuf import saved_model_pb2

    path = str(tmp_path / "model")
    mes.save_model(mlp, path)
    export_dir = os.path.join(path, "savedmodel")
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        meta_graph_def = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0]
    honest = lambda name, feeds: {"scores": np.asarray(mlp(feeds["image"]))}  # noqa: E731
    summary = verify.verify_saved_model(export_dir, meta_graph_def, honest, example=x4)
    assert summary["run"]["signatures"]["serving_default"]["result"] == "matches the source"
    off = lambda name, feeds: {"scores": np.asarray(mlp(feeds["image"])) + 0.01}  # noqa: E731
    with pytest.raises(MlflowException) as e:
        verify.verify_saved_model(export_dir, meta_graph_def, off, example=x4)
    assert "SignatureDef 'serving_default'" in e.value.message and "on the input example inputs" in e.value.message
    assert "max abs diff 0.01" in e.value.message


def test_session_and_saved_model_sources_are_compared_with_the_source(tmp_path, tf):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.arange(6, dtype=np.float32).reshape(3, 2))
        y = tf.identity(tf.matmul(x, w), name="y")
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            mes.save_model(sess, str(tmp_path / "session"), inputs={"x": x}, outputs={"y": y})
            tf.compat.v1.saved_model.simple_save(sess, str(tmp_path / "tf1"), {"x": x}, {"y": y})
    mes.save_model(str(tmp_path / "tf1"), str(tmp_path / "from_tf1"))

    class Module(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.ones((3, 2), np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.matmul(x, self.w)}

    tf.saved_model.save(Module(), str(tmp_path / "tf2"))
    mes.save_model(str(tmp_path / "tf2"), str(tmp_path / "from_tf2"))
    for name in ("session", "from_tf1", "from_tf2"):
        (result,) = _conf(str(tmp_path / name))["verification"]["run"]["signatures"].values()
        assert result["result"] == "matches the source", name


def test_scalar_variables_pass_the_check(tmp_path, tf):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        scale = tf.compat.v1.get_variable("scale", initializer=np.float32(3.0))
        y = tf.identity(x * scale, name="y")
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            mes.save_model(sess, str(tmp_path / "model"), inputs={"x": x}, outputs={"y": y})
    assert _conf(str(tmp_path / "model"))["verification"]["static"] == "ok"
