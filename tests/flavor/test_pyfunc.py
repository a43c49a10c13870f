"""The python_function flavor and the native handle: input kinds, outputs, signature_name, config."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
import mlflow_eas_savedmodel.pyfunc  # noqa: F401 - mes.pyfunc below
from support.mlmodel import read_mlmodel, write_mlmodel


@pytest.fixture(scope="module")
def two_in_two_out(tf):
    import keras

    a = keras.Input((2,), name="a")
    b = keras.Input((3,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    return keras.Model({"a": a, "b": b}, {"sum": keras.layers.Dense(1, name="o1")(joined),
                                          "probs": keras.layers.Dense(2, activation="softmax", name="o2")(joined)})


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory, mlp):
    path = tmp_path_factory.mktemp("pyfunc") / "mlp"
    mes.save_model(mlp, path, inputs=["image"], outputs=["scores"])
    return str(path)


@pytest.fixture(scope="module")
def multi_path(tmp_path_factory, two_in_two_out):
    path = tmp_path_factory.mktemp("pyfunc") / "multi"
    mes.save_model(two_in_two_out, path)
    return str(path)


@pytest.fixture(scope="module")
def ab():
    rng = np.random.default_rng(2)
    return {"a": rng.random((4, 2), dtype=np.float32), "b": rng.random((4, 3), dtype=np.float32)}


def test_numpy_list_and_dataframe_inputs_agree(mlp_path, mlp, x4):
    model = mlflow.pyfunc.load_model(mlp_path)
    expected = mlp(x4).numpy()
    np.testing.assert_allclose(model.predict(x4), expected, rtol=1e-5)
    np.testing.assert_allclose(model.predict({"image": x4}), expected, rtol=1e-5)
    np.testing.assert_allclose(model.predict(pd.DataFrame({"image": list(x4)})), expected, rtol=1e-5)
    # float64 (what JSON and numpy default to) is cast to the signature's float32, by the native
    # handle and, for this tabular input that MLflow enforces no schema on, by pyfunc.
    np.testing.assert_allclose(model.predict(x4.astype(np.float64)), expected, rtol=1e-5)
    handle = mes.load_model(mlp_path)
    np.testing.assert_allclose(handle.predict(x4.astype(np.float64))["scores"], expected, rtol=1e-5)


def test_multi_output_returns_dict_keyed_by_signature_outputs(multi_path, two_in_two_out, ab):
    model = mlflow.pyfunc.load_model(multi_path)
    out = model.predict(ab)
    expected = two_in_two_out(ab)
    assert sorted(out) == ["probs", "sum"]
    for key in out:
        np.testing.assert_allclose(out[key], expected[key].numpy(), rtol=1e-5)
    frame = pd.DataFrame({"a": list(ab["a"]), "b": list(ab["b"])})
    np.testing.assert_allclose(model.predict(frame)["sum"], expected["sum"].numpy(), rtol=1e-5)


def test_handle_exposes_signatures_and_predicts_dicts(multi_path, two_in_two_out, ab):
    handle = mes.load_model(multi_path, device="cpu")
    assert handle.default_signature == "serving_default"
    sig = handle.signatures["serving_default"]
    assert sig["inputs"]["a"] == {"name": "a:0", "dtype": "float32", "shape": [-1, 2]}
    assert sorted(sig["outputs"]) == ["probs", "sum"]
    out = handle.predict(ab, signature_name="serving_default")
    np.testing.assert_allclose(out["probs"], two_in_two_out(ab)["probs"].numpy(), rtol=1e-5)


def test_raw_model_is_the_handle(mlp_path):
    raw = mlflow.pyfunc.load_model(mlp_path).get_raw_model()
    from mlflow_eas_savedmodel.model import EasSavedModel

    assert isinstance(raw, EasSavedModel)
    assert raw.session.graph.finalized


def test_unknown_signature_name_lists_the_known_ones(mlp_path, x4):
    model = mlflow.pyfunc.load_model(mlp_path)
    with pytest.raises(MlflowException, match=r"Unknown signature_name 'nope'. This model has: \['serving_default'\]"):
        model.predict(x4, params={"signature_name": "nope"})
    with pytest.raises(MlflowException, match=r"Unknown signature_name 'nope'"):
        mes.load_model(mlp_path).predict(x4, signature_name="nope")


def test_model_config_and_inference_config_env_choose_the_signature(mlp_path, monkeypatch):
    with pytest.raises(MlflowException, match="Unknown signature_name 'other'"):
        mlflow.pyfunc.load_model(mlp_path, model_config={"signature_name": "other"})
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"signature_name": "other"}))
    with pytest.raises(MlflowException, match="Unknown signature_name 'other'"):
        mlflow.pyfunc.load_model(mlp_path)
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"device": "/CPU:0"}))
    assert mlflow.pyfunc.load_model(mlp_path).get_raw_model().device == "/device:CPU:0"


def test_wrong_dtype_names_input_and_expected_dtype(mlp_path):
    handle = mes.load_model(mlp_path)
    with pytest.raises(MlflowException, match=r"Input 'image' of signature 'serving_default' has dtype <U1, but the signature expects float32"):
        handle.predict(np.array([["a", "b", "c", "d"]]))


def test_wrong_shape_names_input_and_expected_shape(mlp_path):
    handle = mes.load_model(mlp_path)
    with pytest.raises(MlflowException, match=r"Input 'image' of signature 'serving_default' has shape \(2, 5\), but the signature expects \(None, 4\)"):
        handle.predict(np.zeros((2, 5), np.float32))


def test_missing_and_unknown_keys_are_named(multi_path, ab):
    handle = mes.load_model(multi_path)
    with pytest.raises(MlflowException, match=r"takes inputs \['a', 'b'\]; got \['a', 'c'\] \(missing \['b'\]\) \(unknown \['c'\]\)"):
        handle.predict({"a": ab["a"], "c": ab["b"]})
    with pytest.raises(MlflowException, match=r"takes several inputs \['a', 'b'\]; pass a dict"):
        handle.predict(ab["a"])


def test_dataframe_with_ragged_cells_is_a_clear_error(multi_path):
    wrapper = mes.pyfunc._EasSavedModelWrapper(mes.load_model(multi_path))
    frame = pd.DataFrame({"a": [[1.0, 2.0], [1.0]], "b": [[1.0, 2.0, 3.0]] * 2})
    with pytest.raises(MlflowException, match="Column 'a' holds arrays of different shapes"):
        wrapper.predict(frame)


def test_unsupported_input_type_is_named(mlp_path):
    wrapper = mes.pyfunc._EasSavedModelWrapper(mes.load_model(mlp_path))
    with pytest.raises(MlflowException, match="Cannot predict on object. Pass a numpy array, a dict of arrays or a pandas DataFrame"):
        wrapper.predict(object())


@pytest.fixture(scope="module")
def two_signature_path(tmp_path_factory, tf):
    """A TF1 session with ``sig_a`` (``x`` float32[?,2] -> ``y`` = 2x, the default) and
    ``sig_b`` (``z`` float32[?,3] -> ``total`` = sum(z) + 1): different inputs and outputs."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        z = tf.compat.v1.placeholder(tf.float32, [None, 3], name="z")
        y = tf.identity(x * 2.0, name="y")
        total = tf.identity(tf.reduce_sum(z, axis=1) + 1.0, name="total")
        with tf.compat.v1.Session(graph=graph) as session:
            path = tmp_path_factory.mktemp("pyfunc") / "two_signatures"
            mes.save_model(session, path, default_signature="sig_a", signatures={
                "sig_a": {"inputs": {"x": x}, "outputs": {"y": y}},
                "sig_b": {"inputs": {"z": z}, "outputs": {"total": total}},
            })
    return str(path)


X2 = np.array([[1, 2], [3, 4]], np.float32)
Z3 = np.array([[1, 2, 3], [0, 0, -1]], np.float32)


def test_model_config_signature_name_is_what_predict_uses(two_signature_path):
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(two_signature_path).predict({"x": X2}), X2 * 2)
    model = mlflow.pyfunc.load_model(two_signature_path, model_config={"signature_name": "sig_b"})
    np.testing.assert_array_equal(model.predict({"z": Z3}), Z3.sum(axis=1) + 1)
    np.testing.assert_array_equal(model.predict(Z3), Z3.sum(axis=1) + 1)  # one-input: a bare array
    # params still pick another SignatureDef per call
    np.testing.assert_array_equal(model.predict({"x": X2}, params={"signature_name": "sig_a"}), X2 * 2)
    np.testing.assert_array_equal(model.predict({"z": Z3}, params={"signature_name": ""}), Z3.sum(axis=1) + 1)
    with pytest.raises(MlflowException, match=r"Signature 'sig_b' takes inputs \['z'\]; got \['x'\]"):
        model.predict({"x": X2})


def test_inference_config_env_signature_name_is_what_predict_uses(two_signature_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"signature_name": "sig_b"}))
    model = mlflow.pyfunc.load_model(two_signature_path)
    np.testing.assert_array_equal(model.predict({"z": Z3}), Z3.sum(axis=1) + 1)
    np.testing.assert_array_equal(model.predict({"x": X2}, params={"signature_name": "sig_a"}), X2 * 2)


def test_mlflow_signature_shows_no_schema_that_is_wrong_for_a_signaturedef(two_signature_path, mlp_path):
    two = mlflow.models.Model.load(two_signature_path).signature
    assert two.inputs is None and two.outputs is None  # sig_a's would be wrong for sig_b
    assert [(p.name, p.default) for p in two.params.params] == [("signature_name", None), ("output", None)]
    one = mlflow.models.Model.load(mlp_path).signature
    # image (-1, 4) is tabular: no input schema (see metadata.mlflow_signature); outputs are columns.
    assert one.inputs is None and [o.name for o in one.outputs.inputs] == ["scores"]


def test_output_labels_gives_class_indices_from_config_or_params(multi_path, two_in_two_out, ab, tmp_path, tf):
    import keras

    inp = keras.Input((4,), name="x")
    softmax = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="p")(inp))
    sigmoid = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", name="p")(inp))
    x = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)
    mes.save_model(softmax, tmp_path / "softmax")
    mes.save_model(sigmoid, tmp_path / "sigmoid")
    configured = mlflow.pyfunc.load_model(str(tmp_path / "softmax"), model_config={"output": "labels"})
    np.testing.assert_array_equal(configured.predict(x), np.argmax(softmax(x).numpy(), axis=1))
    plain = mlflow.pyfunc.load_model(str(tmp_path / "softmax"))
    np.testing.assert_array_equal(plain.predict(x, params={"output": "labels"}), np.argmax(softmax(x).numpy(), axis=1))
    np.testing.assert_allclose(plain.predict(x), softmax(x).numpy(), rtol=1e-5, atol=1e-6)
    binary = mlflow.pyfunc.load_model(str(tmp_path / "sigmoid")).predict(x, params={"output": "labels"})
    np.testing.assert_array_equal(binary, (sigmoid(x).numpy()[:, 0] >= 0.5).astype(np.int64))

    with pytest.raises(MlflowException, match=r"Unknown output='label' in params. Use output='labels' for class indices"):
        plain.predict(x, params={"output": "label"})
    with pytest.raises(MlflowException, match=r"Unknown output='probs' in model_config"):
        mlflow.pyfunc.load_model(str(tmp_path / "softmax"), model_config={"output": "probs"})
    with pytest.raises(MlflowException, match=r"output='labels' needs a SignatureDef with one output; 'serving_default' has \['probs', 'sum'\]"):
        mlflow.pyfunc.load_model(multi_path).predict(ab, params={"output": "labels"})


def test_the_default_signature_is_recorded_once_and_older_models_config_still_counts(two_signature_path, tmp_path):
    import shutil

    mlmodel = read_mlmodel(two_signature_path)
    assert mlmodel["flavors"]["eas_savedmodel"]["default_signature"] == "sig_a"
    assert mlmodel["flavors"]["python_function"]["config"]["signature_name"] is None
    # Saves before the default was stored once wrote it into model_config as well; one that
    # names another SignatureDef there (edited by hand) is what predict uses.
    for written, expected in (("sig_a", X2 * 2), ("sig_b", Z3.sum(axis=1) + 1)):
        old = tmp_path / written
        shutil.copytree(two_signature_path, old)
        mlmodel["flavors"]["python_function"]["config"]["signature_name"] = written
        write_mlmodel(old, mlmodel)
        model = mlflow.pyfunc.load_model(str(old))
        np.testing.assert_array_equal(model.predict({"x": X2} if written == "sig_a" else {"z": Z3}), expected)
        np.testing.assert_array_equal(model.predict({"x": X2}, params={"signature_name": "sig_a"}), X2 * 2)
