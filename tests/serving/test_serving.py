"""``mlflow models serve -m models:/NAME@champion --env-manager local`` as a real process.

Two servers, one per module: ``mnist`` (a Keras MLP with one tabular input ``image`` (-1, 4))
and ``multi`` (a TF1 session with two SignatureDefs of different inputs). Neither MLflow
signature has an input schema (a tabular input's would refuse DataFrames of feature columns and
CSV, see ``metadata.mlflow_signature``), so this flavor checks each request against the
SignatureDef it names. Expected values come from the original model or from numpy.
"""

import re

import mlflow
from support import multi_signature
import numpy as np
import pytest
import requests

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.registry import promote
from support.stores import sqlite_store
from support.servers import ServerProcess, free_port, mlflow_command, server_env

pytestmark = pytest.mark.server

# The multi-signature session model's weights: serving_default computes image @ W.
W = multi_signature.WEIGHTS
X = np.array([[1, 2, 3, 4], [0, 0, 0, 1], [0.5, -1, 2, 0]], dtype=np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite tracking store + artifact root; the URI the servers are started with."""
    root = tmp_path_factory.mktemp("serving-store")
    with sqlite_store(root, "serving") as uri:
        yield uri, root


def _serve(store, model_uri, name):
    uri, root = store
    port = free_port()
    command = mlflow_command(
        "models", "serve", "-m", model_uri, "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port),
    )
    return ServerProcess(
        command,
        f"http://127.0.0.1:{port}/ping",
        log_path=root / f"{name}.log",
        env=server_env(MLFLOW_TRACKING_URI=uri),
    )


@pytest.fixture(scope="module")
def mnist_server(store, mlp):
    with mlflow.start_run():
        mes.log_model(mlp, name="model", registered_model_name="mnist")
    promote("mnist", 1)
    with _serve(store, "models:/mnist@champion", "mnist") as server:
        yield server


@pytest.fixture(scope="module")
def multi_session(tf):
    """A TF1 session: ``image`` -> ``scores`` and (``a`` float32[?,2], ``b`` int64[?]) ->
    (``total`` = sum(a) + b, ``doubled`` = 2a)."""
    with multi_signature.session(tf, {"serving_default": "scores", "other": "pair_int64"}) as (session, signatures):
        yield session, signatures


@pytest.fixture(scope="module")
def multi_server(store, multi_session):
    session, signatures = multi_session
    with mlflow.start_run():
        mes.log_model(session, name="model", registered_model_name="multi", signatures=signatures)
    promote("multi", 1)
    with _serve(store, "models:/multi@champion", "multi") as server:
        yield server


def _invoke(server, body):
    return requests.post(server.url("/invocations"), json=body, timeout=60)


def _predictions(response):
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_ping(mnist_server):
    assert requests.get(mnist_server.url("/ping"), timeout=10).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": X.tolist()},
        {"inputs": {"image": X.tolist()}},
        {"instances": X.tolist()},
        {"instances": [{"image": row} for row in X.tolist()]},
        {"dataframe_split": {"columns": ["image"], "data": [[row] for row in X.tolist()]}},
        {"inputs": X.tolist(), "params": {"signature_name": "serving_default"}},
    ],
    ids=["inputs-tensor", "inputs-dict", "instances", "instances-dicts", "dataframe_split", "params"],
)
def test_keras_model_answers_every_request_format(mnist_server, mlp, body):
    np.testing.assert_allclose(_predictions(_invoke(mnist_server, body)), mlp(X).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "body, message",
    [
        # image (-1, 4) is tabular: MLflow enforces no input schema (metadata.py), the flavor does.
        ({"inputs": {"imag": X.tolist()}}, r"Signature 'serving_default' takes inputs \['image'\]; got \['imag'\] \(missing \['image'\]\) \(unknown \['imag'\]\)"),
        ({"inputs": X[:, :3].tolist()}, r"Input 'image' of signature 'serving_default' has shape \(3, 3\), but the signature expects \(None, 4\)"),
        ({"inputs": [["a", "b", "c", "d"]]}, r"Input 'image' of signature 'serving_default' has dtype <U1, but the signature expects float32"),
        ({"inputs": X.tolist(), "params": {"signature_name": "nope"}}, r"Unknown signature_name 'nope'. This model has: \['serving_default'\]"),
    ],
    ids=["key", "shape", "dtype", "signature"],
)
def test_keras_model_rejects_bad_requests_with_400_and_keeps_serving(mnist_server, mlp, body, message):
    response = _invoke(mnist_server, body)
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["message"]), response.json()["message"]
    assert mnist_server.alive()
    np.testing.assert_allclose(_predictions(_invoke(mnist_server, {"inputs": X.tolist()})), mlp(X).numpy(), rtol=1e-5, atol=1e-6)


def test_malformed_json_is_a_400(mnist_server):
    response = requests.post(
        mnist_server.url("/invocations"), data=b'{"inputs": [[1, 2,', timeout=30,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert "Ensure that input is a valid JSON formatted string" in response.json()["message"]
    assert mnist_server.alive()


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_mlflows_500_and_the_server_keeps_serving(mnist_server, mlp, depth):
    """MLflow's scoring server decodes the body with json.loads before this package sees it; its
    RecursionError is an HTTP 500 (docs/security.md). The server survives and keeps answering."""
    body = '{"inputs": ' + "[" * depth + "1" + "]" * depth + "}"
    response = requests.post(
        mnist_server.url("/invocations"), data=body.encode(), timeout=60,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 500, response.text
    assert mnist_server.alive()
    np.testing.assert_allclose(_predictions(_invoke(mnist_server, {"inputs": X.tolist()})), mlp(X).numpy(), rtol=1e-5, atol=1e-6)


A = np.array([[1, 2], [3, 4], [-1, 0.5]], dtype=np.float32)
B = np.array([10, 20, -3], dtype=np.int64)
OTHER = {"signature_name": "other"}


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": {"a": A.tolist(), "b": B.tolist()}, "params": OTHER},
        {"instances": [{"a": a, "b": b} for a, b in zip(A.tolist(), B.tolist())], "params": OTHER},
        {"dataframe_split": {"columns": ["a", "b"], "data": [[a, b] for a, b in zip(A.tolist(), B.tolist())]}, "params": OTHER},
    ],
    ids=["inputs", "instances", "dataframe_split"],
)
def test_signature_name_param_selects_another_signature_def(multi_server, body):
    predictions = _predictions(_invoke(multi_server, body))
    np.testing.assert_allclose(predictions["total"], A.sum(axis=1) + B, rtol=1e-6)
    np.testing.assert_allclose(predictions["doubled"], 2 * A, rtol=1e-6)


@pytest.mark.parametrize(
    "body",
    [{"inputs": X.tolist()}, {"inputs": {"image": X.tolist()}}, {"instances": X.tolist()},
     {"dataframe_split": {"columns": ["image"], "data": [[row] for row in X.tolist()]}}],
    ids=["inputs-tensor", "inputs-dict", "instances", "dataframe_split"],
)
def test_multi_signature_model_default_signature(multi_server, body):
    np.testing.assert_allclose(_predictions(_invoke(multi_server, body)), X @ W, rtol=1e-5)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"inputs": {"a": A.tolist(), "c": B.tolist()}, "params": OTHER},
         r"Signature 'other' takes inputs \['a', 'b'\]; got \['a', 'c'\] \(missing \['b'\]\) \(unknown \['c'\]\)"),
        ({"inputs": {"a": A.tolist(), "b": [1.5, 2.5, 3.5]}, "params": OTHER},
         r"Input 'b' of signature 'other' has dtype float64, but the signature expects int64"),
        ({"inputs": {"a": [["x", "y"]], "b": [1]}, "params": OTHER},
         r"Input 'a' of signature 'other' has dtype <U1, but the signature expects float32"),
        ({"inputs": {"a": [[1, 2, 3]], "b": [1]}, "params": OTHER},
         r"Input 'a' of signature 'other' has shape \(1, 3\), but the signature expects \(None, 2\)"),
        ({"inputs": X[:, :3].tolist()},
         r"Input 'image' of signature 'serving_default' has shape \(3, 3\), but the signature expects \(None, 4\)"),
        ({"inputs": X.tolist(), "params": {"signature_name": "nope"}},
         r"Unknown signature_name 'nope'. This model has: \['other', 'serving_default'\]"),
    ],
    ids=["key", "dtype-float", "dtype-string", "shape-other", "shape-default", "signature"],
)
def test_multi_signature_model_rejects_bad_requests_with_400_and_keeps_serving(multi_server, body, message):
    response = _invoke(multi_server, body)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert re.search(message, response.json()["message"]), response.json()["message"]
    assert multi_server.alive()
    np.testing.assert_allclose(_predictions(_invoke(multi_server, {"inputs": X.tolist()})), X @ W, rtol=1e-5)
