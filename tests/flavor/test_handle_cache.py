"""The per-process cache of loaded handles (``mlflow_eas_savedmodel.pyfunc._HandleCache``).

``spark_udf`` on a local master calls ``mlflow.pyfunc.load_model`` for every task. A second load
of an unchanged, settled model hands back the same handle without running the pre-load check
(hashes, ops policy, MLmodel vs graph) or restoring the graph again; any change to the model
folder after the first load makes a full load, which refuses the change with today's message.
The counts below come from the real check, wrapped to count its calls.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import integrity
from mlflow_eas_savedmodel import load as flavor_load
from mlflow_eas_savedmodel import pyfunc as flavor_pyfunc
from support.mlmodel import read_mlmodel, write_mlmodel

X = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def regressor(tf):
    import keras

    keras.utils.set_random_seed(0)
    features = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(features)
    return keras.Model(features, keras.layers.Dense(1, name="price")(hidden))


@pytest.fixture
def model(regressor, tmp_path, monkeypatch):
    """A saved model whose files count as settled (0.2 s after their last change, 2 s by default)."""
    monkeypatch.setattr(integrity, "SETTLED_SECONDS", 0.2)
    flavor_pyfunc._handles.clear()
    path = tmp_path / "model"
    mes.save_model(regressor, str(path))
    threading.Event().wait(0.3)
    yield path
    flavor_pyfunc._handles.clear()


@pytest.fixture
def checks(monkeypatch):
    """Counts the pre-load checks (hashes, ops policy, MLmodel vs graph) and the hashed files."""
    counts = {"checks": 0, "hashed": 0}
    check, read = flavor_load.check_model_folder, integrity._read_sha256

    def counted_check(*args, **kwargs):
        counts["checks"] += 1
        return check(*args, **kwargs)

    def counted_read(f):
        counts["hashed"] += 1
        return read(f)

    monkeypatch.setattr(flavor_load, "check_model_folder", counted_check)
    monkeypatch.setattr(integrity, "_read_sha256", counted_read)
    integrity._digests.clear()
    return counts


def test_a_second_load_of_an_unchanged_model_runs_no_check_and_no_restore(model, checks, regressor):
    first = mlflow.pyfunc.load_model(str(model))
    assert checks["checks"] == 1 and checks["hashed"] >= 2  # saved_model.pb, variables...
    hashed = checks["hashed"]
    second = mlflow.pyfunc.load_model(str(model))
    assert second.get_raw_model() is first.get_raw_model()
    assert (checks["checks"], checks["hashed"]) == (1, hashed)
    np.testing.assert_array_equal(second.predict(X), first.predict(X))
    np.testing.assert_allclose(second.predict(X), regressor(X).numpy(), rtol=1e-5, atol=1e-6)


def test_with_the_cache_off_every_load_checks_and_restores(model, checks, monkeypatch):
    monkeypatch.setenv(flavor_pyfunc.LOAD_CACHE_ENV, "0")
    first = mlflow.pyfunc.load_model(str(model))
    second = mlflow.pyfunc.load_model(str(model))
    assert second.get_raw_model() is not first.get_raw_model()
    assert checks["checks"] == 2
    np.testing.assert_array_equal(second.predict(X), first.predict(X))


def test_a_variables_file_changed_after_the_first_load_is_refused(model, checks):
    mlflow.pyfunc.load_model(str(model))
    data = model / "savedmodel" / "variables" / "variables.data-00000-of-00001"
    content = bytearray(data.read_bytes())
    content[-1] ^= 0xFF
    data.write_bytes(bytes(content))
    with pytest.raises(MlflowException, match=r"file 'variables/variables.data-00000-of-00001' was changed or truncated"):
        mlflow.pyfunc.load_model(str(model))
    assert checks["checks"] == 2


def test_an_mlmodel_changed_after_the_first_load_is_refused(model, checks):
    mlflow.pyfunc.load_model(str(model))
    doc = read_mlmodel(model)
    hashes = doc["flavors"]["eas_savedmodel"]["file_sha256"]
    hashes["saved_model.pb"] = "0" * 64
    write_mlmodel(model, doc)
    with pytest.raises(MlflowException, match=r"does not match the SHA-256 hashes recorded when it was saved:\n  file 'saved_model.pb' was changed or truncated"):
        mlflow.pyfunc.load_model(str(model))
    assert checks["checks"] == 2


def test_other_devices_and_integrity_settings_get_their_own_handle(model, checks):
    default = mlflow.pyfunc.load_model(str(model)).get_raw_model()
    cpu = mlflow.pyfunc.load_model(str(model), model_config={"device": "cpu"}).get_raw_model()
    unverified = mlflow.pyfunc.load_model(str(model), model_config={"verify_integrity": False}).get_raw_model()
    assert len({id(default), id(cpu), id(unverified)}) == 3
    assert checks["checks"] == 3
    # Each is kept under its own settings: asking again gives each one back.
    assert mlflow.pyfunc.load_model(str(model), model_config={"device": "cpu"}).get_raw_model() is cpu
    assert checks["checks"] == 3


def test_outputs_settings_share_the_handle_but_not_the_wrapper(model, regressor):
    scores = mlflow.pyfunc.load_model(str(model))
    values = mlflow.pyfunc.load_model(str(model), model_config={"output": "values"})
    assert values.get_raw_model() is scores.get_raw_model()
    np.testing.assert_array_equal(values.predict(X), scores.predict(X)[:, 0])


def test_threads_loading_and_predicting_at_once_share_one_correct_handle(model, checks):
    serial = mlflow.pyfunc.load_model(str(model))
    # Per batch size: a batch of 1 may take another kernel than a batch of 6 (last-bit changes).
    expected = {n: serial.predict(X[len(X) - n:]) for n in range(1, len(X) + 1)}

    def load_and_predict(i):
        loaded = mlflow.pyfunc.load_model(str(model))
        rows = X[i % len(X):]
        return loaded.get_raw_model(), rows, [loaded.predict(rows) for _ in range(20)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(load_and_predict, range(32)))
    assert len({id(handle) for handle, _, _ in results}) == 1
    assert checks["checks"] == 1
    for _, rows, predictions in results:
        for p in predictions:
            np.testing.assert_array_equal(p, expected[len(rows)])
