"""The python_function flavor and the native handle: input kinds, outputs, signature_name, config."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
import mlflow_eas_savedmodel.pyfunc  # noqa: F401 - mes.pyfunc below


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
    # The native handle casts float64 (what JSON and numpy default to) to the signature's float32;
    # pyfunc leaves that to MLflow's schema enforcement, which refuses it.
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
