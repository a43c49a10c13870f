"""Keras files are read in safe mode (Keras 3 and tf_keras): a Lambda holding Python code is
refused unless ``safe_mode=False``; a marker file written by that code proves whether it ran."""

import os

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes


def _lambda(marker):
    # Self-contained (no globals): unmarshalled from the file, it needs nothing of this module.
    path = str(marker)
    return eval(f"lambda x: (__import__('os').system('echo ran >> {path}'), x)[1]")  # noqa: S307


@pytest.fixture
def tf_keras_lambda_h5(tmp_path, tf):
    import tf_keras

    marker = tmp_path / "lambda-ran"
    inp = tf_keras.Input((4,), name="features")
    out = tf_keras.layers.Lambda(_lambda(marker), name="evil")(inp)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(2, name="dense")(out))
    path = tmp_path / "evil.h5"
    model.save(path)
    if marker.exists():
        marker.unlink()  # building the model above called the lambda
    return path, marker, model


@pytest.fixture(params=[".keras", ".h5"])
def keras3_lambda_file(tmp_path, tf, request):
    import keras

    marker = tmp_path / "lambda-ran"
    inp = keras.Input((4,), name="features")
    model = keras.Model(inp, keras.layers.Lambda(_lambda(marker), name="evil")(inp))
    path = tmp_path / f"evil{request.param}"
    model.save(path)
    if marker.exists():
        marker.unlink()
    return path, marker


def _assert_refused_safe_mode(path, target):
    with pytest.raises(MlflowException) as info:
        mes.save_model(str(path), target)
    message = info.value.message
    assert "holds Python code" in message, message
    assert "save_model(..., safe_mode=False)" in message, message
    assert not os.path.exists(target)


def test_tf_keras_h5_lambda_is_refused_and_never_runs(tf_keras_lambda_h5, tmp_path):
    path, marker, _ = tf_keras_lambda_h5
    _assert_refused_safe_mode(path, tmp_path / "m")
    assert not marker.exists()


def test_keras3_lambda_is_refused_and_never_runs(keras3_lambda_file, tmp_path):
    path, marker = keras3_lambda_file
    _assert_refused_safe_mode(path, tmp_path / "m")
    assert not marker.exists()


def test_safe_mode_false_loads_a_trusted_lambda(tf_keras_lambda_h5, tmp_path, x4):
    path, marker, model = tf_keras_lambda_h5
    mes.save_model(str(path), tmp_path / "m", safe_mode=False)
    assert marker.exists()  # the owner asked for it: the code ran while loading and tracing
    outputs = mes.load_model(str(tmp_path / "m"), device="cpu").predict(x4)
    np.testing.assert_allclose(next(iter(outputs.values())), model(x4).numpy(), rtol=1e-5, atol=1e-6)
