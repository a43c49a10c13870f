"""MLflow habits (issue 22): what MLflow users do by habit, without reading this package's docs.

Each section is one habit, typed as a user types it, on a model logged to a real sqlite store
and registered as ``houses`` (a Keras regressor: input ``features`` (-1, 4) -> output ``price``
(-1, 1)); every prediction is compared with the Keras model's own output. Other habits of
issue 22 live beside their concern and may be appended here as sections:

* tabular inputs: a DataFrame of numeric columns, a list of lists, a 2-D array, CSV through
  ``mlflow models predict --content-type csv`` and ``/invocations`` with ``text/csv``;
* ``mlflow.models.evaluate`` for a regressor and a classifier, on a DataFrame and on arrays
  (``examples/evaluate_*.py`` run the same in ``tests/docs/test_examples.py``);
* ``spark_udf(spark, "models:/mnist@champion")`` as the README writes it:
  ``tests/serving/test_spark.py::test_readme_spark_udf_example_runs_as_written`` (it shares that
  module's Spark session);
* batch scoring: a model loaded again in the same process (what ``spark_udf`` does for every
  task) reuses the loaded, verified handle unless a file changed.
"""

import json
import os
import re
import subprocess
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import integrity
from mlflow_eas_savedmodel import pyfunc as flavor_pyfunc
from mlflow_eas_savedmodel.registry import promote
from support.servers import ServerProcess, free_port, mlflow_command, server_env
from support.stores import sqlite_store

X = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
HOUSES = "models:/houses@champion"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("habits-store")
    with sqlite_store(root, "habits") as uri:
        yield uri, root


@pytest.fixture(scope="module")
def regressor(tf):
    import keras

    keras.utils.set_random_seed(0)
    features = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(features)
    return keras.Model(features, keras.layers.Dense(1, name="price")(hidden))


@pytest.fixture(scope="module")
def houses(store, regressor):
    with mlflow.start_run():
        mes.log_model(regressor, name="model", input_example=X[:2], registered_model_name="houses")
    promote("houses", 1)
    return HOUSES


# --- Tabular inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    ["columns", "list of lists", "array", "named input", "named column"],
)
def test_a_tabular_model_takes_what_mlflow_users_pass(houses, regressor, form):
    data = {
        "columns": pd.DataFrame(X, columns=["rooms", "age", "distance", "area"]),  # in column order
        "list of lists": X.tolist(),
        "array": X,
        "named input": {"features": X},
        "named column": pd.DataFrame({"features": list(X)}),
    }[form]
    predictions = mlflow.pyfunc.load_model(houses).predict(data)
    np.testing.assert_allclose(predictions, regressor(X).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame(X[:, :3], columns=["rooms", "age", "distance"]),
         r"The model takes one input 'features' of shape \(None, 4\), 4 values per row, but the "
         r"DataFrame has 3 columns \['rooms', 'age', 'distance'\]. Pass 4 numeric columns in the "
         r"model's order, or one column named 'features' holding each row's values."),
        (pd.DataFrame(X, columns=list("abcd")).assign(city="Hangzhou"),
         r"The model takes one input 'features' of shape \(None, 4\); the DataFrame's columns "
         r"\['a', 'b', 'c', 'd', 'city'\] are taken as its values in column order, but \['city'\] "
         r"are not numeric. Pass numeric columns only, or one column named 'features' holding each "
         r"row's values."),
    ],
    ids=["too few columns", "a text column"],
)
def test_a_wrong_table_is_one_line_naming_the_input_and_the_columns(houses, frame, message):
    with pytest.raises(MlflowException) as raised:
        mlflow.pyfunc.load_model(houses).predict(frame)
    assert re.fullmatch(message, raised.value.message), raised.value.message
    assert f"{X[0, 0]:.4f}"[:6] not in raised.value.message  # no DataFrame dump


def test_mlflow_models_predict_takes_csv(houses, store, regressor, tmp_path):
    uri, _ = store
    pd.DataFrame(X, columns=["rooms", "age", "distance", "area"]).to_csv(tmp_path / "in.csv", index=False)
    result = subprocess.run(
        mlflow_command("models", "predict", "-m", houses, "-i", str(tmp_path / "in.csv"),
                       "-t", "csv", "-o", str(tmp_path / "out.json"), "--env-manager", "local"),
        env=server_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads((tmp_path / "out.json").read_text())["predictions"]
    np.testing.assert_allclose(predictions, regressor(X).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.server
def test_invocations_take_text_csv_and_answer_a_bad_table_in_one_line(houses, store, regressor):
    uri, root = store
    port = free_port()
    command = mlflow_command("models", "serve", "-m", houses, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port))
    with ServerProcess(command, f"http://127.0.0.1:{port}/ping", log_path=root / "serve.log",
                       env=server_env(MLFLOW_TRACKING_URI=uri)) as server:
        def post_csv(frame):
            return requests.post(server.url("/invocations"), data=frame.to_csv(index=False),
                                 headers={"Content-Type": "text/csv"}, timeout=60)

        good = post_csv(pd.DataFrame(X, columns=["rooms", "age", "distance", "area"]))
        assert good.status_code == 200, good.text
        np.testing.assert_allclose(good.json()["predictions"], regressor(X).numpy(), rtol=1e-5, atol=1e-6)

        bad = post_csv(pd.DataFrame(X[:, :3], columns=["rooms", "age", "distance"]))
        assert bad.status_code == 400, bad.text
        answer = bad.json()
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE" and "stack_trace" not in answer
        # MLflow's scoring server puts "Failed to predict data '<the DataFrame>'. \nError: "
        # before every flavor's message; the flavor's own part is one line.
        assert answer["message"].endswith(
            "\nError: The model takes one input 'features' of shape (None, 4), 4 values per row, "
            "but the DataFrame has 3 columns ['rooms', 'age', 'distance']. Pass 4 numeric columns "
            "in the model's order, or one column named 'features' holding each row's values."
        ), answer["message"]


# --- mlflow.models.evaluate -----------------------------------------------------------------


@pytest.mark.parametrize("form", ["DataFrame", "arrays"])
def test_evaluate_a_regressor_with_output_values(houses, regressor, form):
    y = X @ np.array([1.0, -1.0, 0.5, 2.0], np.float32)
    data, targets = (
        (pd.DataFrame(X, columns=list("abcd")).assign(price=y), "price") if form == "DataFrame" else (X, y)
    )
    with mlflow.start_run():
        result = mlflow.models.evaluate(houses, data, targets=targets, model_type="regressor",
                                        evaluators=["default"], model_config={"output": "values"})
    expected = np.mean(np.abs(regressor(X).numpy()[:, 0] - y))
    assert result.metrics["mean_absolute_error"] == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def classifier_uri(store, tf):
    import keras

    keras.utils.set_random_seed(1)
    features = keras.Input((4,), name="features")
    model = keras.Model(features, keras.layers.Dense(3, activation="softmax", name="probs")(features))
    with mlflow.start_run():
        info = mes.log_model(model, name="model")
    return info.model_uri, model


@pytest.mark.parametrize("form", ["DataFrame", "arrays"])
def test_evaluate_a_classifier_with_output_labels(classifier_uri, form):
    uri, model = classifier_uri
    labels = np.argmax(model(X).numpy(), axis=1)
    y = np.where(np.arange(len(X)) % 3 == 0, (labels + 1) % 3, labels)  # a third of them wrong
    data, targets = (
        (pd.DataFrame(X, columns=list("abcd")).assign(label=y), "label") if form == "DataFrame" else (X, y)
    )
    with mlflow.start_run():
        result = mlflow.models.evaluate(uri, data, targets=targets, model_type="classifier",
                                        evaluators=["default"], model_config={"output": "labels"})
    assert result.metrics["accuracy_score"] == pytest.approx(np.mean(labels == y))


# --- Batch scoring: loading an unchanged model again ----------------------------------------


@pytest.fixture
def settled_quickly(monkeypatch):
    """Files count as settled 0.2 s after their last change (2 s by default) to keep this fast."""
    monkeypatch.setattr(integrity, "SETTLED_SECONDS", 0.2)
    flavor_pyfunc._handles.clear()
    yield
    flavor_pyfunc._handles.clear()


def _saved(regressor, path):
    mes.save_model(regressor, path)
    time.sleep(0.3)  # let the files settle
    return str(path)


def test_loading_an_unchanged_model_again_reuses_its_handle(regressor, tmp_path, settled_quickly):
    path = _saved(regressor, tmp_path / "model")
    first = mlflow.pyfunc.load_model(path)
    second = mlflow.pyfunc.load_model(path, model_config={"output": "values"})
    assert second.get_raw_model() is first.get_raw_model()
    np.testing.assert_allclose(second.predict(X), regressor(X).numpy()[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.predict(X), regressor(X).numpy(), rtol=1e-5, atol=1e-6)
    # Another device, or the check switched off, is another load.
    assert mlflow.pyfunc.load_model(path, model_config={"verify_integrity": False}).get_raw_model() is not first.get_raw_model()
    first.get_raw_model().close()  # a closed handle is never handed out again
    third = mlflow.pyfunc.load_model(path)
    np.testing.assert_allclose(third.predict(X), regressor(X).numpy(), rtol=1e-5, atol=1e-6)


def test_a_file_changed_in_place_with_its_mtime_restored_is_not_served_from_the_cache(regressor, tmp_path, settled_quickly):
    path = _saved(regressor, tmp_path / "model")
    loaded = mlflow.pyfunc.load_model(path)
    data = os.path.join(path, "savedmodel", "variables", "variables.data-00000-of-00001")
    before = os.stat(data)
    with open(data, "r+b") as f:  # same size, one byte flipped
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(data)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    with pytest.raises(MlflowException, match=r"file 'variables/variables.data-00000-of-00001' was changed or truncated"):
        mlflow.pyfunc.load_model(path)
    del loaded


def test_a_model_saved_moments_ago_is_not_kept(regressor, tmp_path, monkeypatch):
    flavor_pyfunc._handles.clear()
    path = str(tmp_path / "model")
    mes.save_model(regressor, path)  # its files changed less than SETTLED_SECONDS (2 s) ago
    first = mlflow.pyfunc.load_model(path)
    assert mlflow.pyfunc.load_model(path).get_raw_model() is not first.get_raw_model()


def test_the_cache_can_be_turned_off_and_a_bad_setting_is_named(regressor, tmp_path, settled_quickly, monkeypatch):
    path = _saved(regressor, tmp_path / "model")
    monkeypatch.setenv(flavor_pyfunc.LOAD_CACHE_ENV, "0")
    first = mlflow.pyfunc.load_model(path)
    assert mlflow.pyfunc.load_model(path).get_raw_model() is not first.get_raw_model()
    monkeypatch.setenv(flavor_pyfunc.LOAD_CACHE_ENV, "many")
    with pytest.raises(MlflowException, match=r"MLFLOW_EAS_SAVEDMODEL_LOAD_CACHE='many' is not a number. "
                       r"Set it to how many loaded models each process keeps for reuse \(0 turns the cache off\), or unset it."):
        mlflow.pyfunc.load_model(path)
