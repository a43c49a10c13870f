"""The local EAS endpoint, answered for the official eas-prediction client (no mocks).

The model is ``tests/support/multi_signature.py``'s ``EAS_MODEL``: ``serving_default`` (x float32 -> y
float32, n int64) and ``lookup`` (strings s -> ids, echo).
"""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from support.multi_signature import EAS_EXAMPLE

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.eas import protocol
from mlflow_eas_savedmodel.eas.endpoint import serve_eas
from mlflow_eas_savedmodel.eas.official_client import run_client_ops

X = EAS_EXAMPLE
WORDS = np.array([b"a", b"zz", b"bb", "\u00e9".encode()], dtype=object)


@pytest.fixture(scope="module")
def endpoint(eas_session_model):
    ep = serve_eas(eas_session_model, "demo_service")
    try:
        yield ep
    finally:
        ep.close()


@pytest.fixture(scope="module")
def handle(eas_session_model):
    return mes.load_model(eas_session_model, device="cpu")


def _feed(name, array, code):
    values = np.asarray(array).reshape(-1).tolist()
    if code == protocol.DT_STRING:
        values = [base64.b64encode(v).decode() for v in values]
    return [name, list(np.shape(array)), code, values]


def _array(tensor):
    values = tensor["values"]
    if tensor["dtype"] == protocol.DT_STRING:
        return np.array([base64.b64decode(v) for v in values], dtype=object).reshape(tensor["shape"])
    dtype = {protocol.DT_FLOAT: np.float32, protocol.DT_INT64: np.int64}[tensor["dtype"]]
    return np.array(values, dtype=dtype).reshape(tensor["shape"])


def test_official_client_gets_the_handles_outputs(endpoint, handle):
    assert endpoint.host == "127.0.0.1"
    base = {"op": "predict", "endpoint": endpoint.endpoint, "service": "demo_service"}
    default, lookup, filtered, by_tensor_name = run_client_ops([
        {**base, "signature_name": "serving_default", "feeds": [_feed("x", X, protocol.DT_FLOAT)]},
        {**base, "signature_name": "lookup", "feeds": [_feed("s", WORDS, protocol.DT_STRING)]},
        {**base, "signature_name": "lookup", "feeds": [_feed("s", WORDS, protocol.DT_STRING)], "fetches": ["ids"]},
        {**base, "signature_name": "serving_default", "feeds": [_feed("x", X, protocol.DT_FLOAT)], "fetches": ["n:0"]},
    ])
    want = handle.predict({"x": X})
    assert sorted(default["outputs"]) == ["n", "y"]
    np.testing.assert_array_equal(_array(default["outputs"]["y"]), want["y"])
    np.testing.assert_array_equal(_array(default["outputs"]["n"]), want["n"])
    # The client's own accessors read the same thing.
    assert default["shapes"]["y"] == [2, 2]
    np.testing.assert_array_equal(np.float32(default["values"]["y"]), want["y"].reshape(-1))

    want_lookup = handle.predict({"s": WORDS}, signature_name="lookup")
    np.testing.assert_array_equal(_array(lookup["outputs"]["ids"]), want_lookup["ids"])
    assert _array(lookup["outputs"]["echo"]).tolist() == WORDS.tolist()
    assert _array(lookup["outputs"]["ids"]).tolist() == [1, -1, 2, -1]

    assert sorted(filtered["outputs"]) == ["ids"]  # output_filter honoured
    assert sorted(by_tensor_name["outputs"]) == ["n"]


def test_empty_signature_name_means_the_default(endpoint, handle):
    body = protocol.encode_request({"x": X})
    with urllib.request.urlopen(urllib.request.Request(endpoint.url, data=body), timeout=30) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/octet-stream"
        got = protocol.decode_response(resp.read())
    for key, value in handle.predict({"x": X}).items():
        np.testing.assert_array_equal(got[key], value)


def test_get_describes_the_signature_as_eas_does(endpoint):
    with urllib.request.urlopen(endpoint.url, timeout=30) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        described = json.load(resp)
    assert described == {
        "signature_name": "serving_default",
        "inputs": [{"name": "x", "shape": [-1, 3], "type": "DT_FLOAT"}],
        "outputs": [{"name": "n", "shape": [-1], "type": "DT_INT64"}, {"name": "y", "shape": [-1, 2], "type": "DT_FLOAT"}],
    }
    with urllib.request.urlopen(endpoint.url + "?signature_name=lookup", timeout=30) as resp:
        lookup = json.load(resp)
    assert lookup["signature_name"] == "lookup"
    assert lookup["inputs"] == [{"name": "s", "shape": [-1], "type": "DT_STRING"}]


def _post(url, body, method="POST"):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method), timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize(
    ("request_args", "status", "message"),
    [
        ({"inputs": {"x": X}, "signature_name": "nope"}, 400, "Unknown signature_name 'nope'. This model has: ['lookup', 'serving_default']"),
        ({"inputs": {"q": X}}, 400, "Signature 'serving_default' takes inputs ['x']; got ['q']"),
        ({"inputs": {"x": X}, "output_filter": ["zz"]}, 400, "output_filter asks for ['zz'], which signature 'serving_default' does not output. Its outputs are ['n', 'y']"),
        ({"inputs": {"x": np.ones((2, 5), np.float32)}}, 400, "Input 'x' of signature 'serving_default' has shape (2, 5), but the signature expects (None, 3)"),
        ({"inputs": {"x": np.array([["a", "b", "c"]])}}, 400, "Input 'x' of signature 'serving_default' has dtype object, but the signature expects float32"),
    ],
)
def test_bad_requests_get_400_with_the_fix(endpoint, request_args, status, message):
    got_status, text = _post(endpoint.url, protocol.encode_request(**request_args))
    assert (got_status, message in text) == (status, True), text


def test_transport_errors(endpoint):
    status, text = _post(endpoint.url, b"\xff\xff\xff")
    assert status == 400 and "The body is not a serialized EAS PredictRequest" in text
    status, text = _post(endpoint.url.replace("demo_service", "other"), protocol.encode_request({"x": X}))
    assert status == 404 and "this endpoint serves /api/predict/demo_service" in text
    status, text = _post(endpoint.url + "?signature_name=nope", None, method="GET")
    assert status == 400 and "Unknown signature_name 'nope'" in text
    # The official client surfaces our 400 and its message.
    (result,) = run_client_ops([{
        "op": "predict", "endpoint": endpoint.endpoint, "service": "demo_service",
        "signature_name": "missing", "feeds": [_feed("x", X, protocol.DT_FLOAT)],
    }])
    assert result["error_code"] == 400 and "Unknown signature_name 'missing'" in result["error"]


def test_concurrent_requests_each_get_their_own_answer(endpoint, handle):
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((i + 1, 3)).astype(np.float32) for i in range(16)]
    results = [None] * len(batches)

    def call(i):
        body = protocol.encode_request({"x": batches[i]}, output_filter=["y"])
        with urllib.request.urlopen(urllib.request.Request(endpoint.url, data=body), timeout=60) as resp:
            results[i] = protocol.decode_response(resp.read())["y"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for batch, got in zip(batches, results):
        np.testing.assert_array_equal(got, handle.predict({"x": batch})["y"])


def _get(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_token_is_checked_as_eas_does_and_readiness_needs_none(eas_session_model, handle):
    """With a token, /api/predict/<name> answers 401 unless ``Authorization`` is exactly it
    (the official client's ``set_token``); /ping and /health answer 200 without it."""
    with serve_eas(eas_session_model, "guarded", token="s3cret") as ep:
        body = protocol.encode_request({"x": X})
        unauthorized = "Authorization failed: send the service token in the Authorization header"
        for headers in ({}, {"Authorization": "wrong"}, {"Authorization": "Bearer s3cret"}):
            request = urllib.request.Request(ep.url, data=body, headers=headers)
            try:
                urllib.request.urlopen(request, timeout=30)
                raise AssertionError(f"{headers} was let in")
            except urllib.error.HTTPError as e:
                assert (e.code, unauthorized in e.read().decode()) == (401, True), headers
            assert _get(ep.url, headers)[0] == 401  # the description too
        for path in ("/ping", "/health"):
            assert _get(f"http://{ep.endpoint}{path}") == (200, "\n")
        assert _get(ep.url, {"Authorization": "s3cret"})[0] == 200
        base = {"op": "predict", "endpoint": ep.endpoint, "service": "guarded", "signature_name": "",
                "feeds": [_feed("x", X, protocol.DT_FLOAT)]}
        # The official client signs each request with the token (Authorization: EAS <HMAC>).
        with_token, wrong, without = run_client_ops(
            [{**base, "token": "s3cret"}, {**base, "token": "wrong"}, base])
        np.testing.assert_allclose(_array(with_token["outputs"]["y"]), handle.predict({"x": X})["y"], rtol=1e-6)
        assert wrong["error_code"] == 401 and unauthorized in wrong["error"]
        assert without["error_code"] == 401 and unauthorized in without["error"]
    with serve_eas(eas_session_model, "open") as ep:  # no token: every request is served, as before
        assert _get(f"http://{ep.endpoint}/ping")[0] == 200 and _get(ep.url)[0] == 200
    with pytest.raises(MlflowException, match="The token must be a non-empty string"):
        serve_eas(eas_session_model, "svc", token=" ")


def test_serve_eas_cli(eas_session_model, handle, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "mlflow-eas-savedmodel")
    stderr = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen(
        [script, "serve-eas", eas_session_model, "--name", "cli_demo", "--port", "0", "--token", "t0ken"],
        stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        line, deadline = "", time.monotonic() + 240
        while "Serving" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/api/predict/cli_demo)", line)
        assert match, (line, proc.poll(), (tmp_path / "stderr.txt").read_text()[-2000:])
        body = protocol.encode_request({"s": WORDS}, signature_name="lookup", output_filter=["ids"])
        assert _post(match.group(1), body)[0] == 401
        assert _get(match.group(1).split("/api/")[0] + "/ping")[0] == 200
        request = urllib.request.Request(match.group(1), data=body, headers={"Authorization": "t0ken"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            got = protocol.decode_response(resp.read())
        np.testing.assert_array_equal(got["ids"], handle.predict({"s": WORDS}, signature_name="lookup")["ids"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        stderr.close()


def test_a_burst_of_connections_waits_in_the_listen_backlog():
    # Nothing accepts on this server, so every connection must fit in the kernel's listen
    # queue: with socketserver's default backlog of 5 the 7th connect hangs, and under a burst
    # of real clients the overflow came back as "connection reset by peer".
    import socket

    from mlflow_eas_savedmodel.eas.endpoint import _EndpointServer

    server = _EndpointServer(("127.0.0.1", 0), endpoint=None)
    clients = []
    try:
        for _ in range(64):
            clients.append(socket.create_connection(server.server_address, timeout=3))
    finally:
        for client in clients:
            client.close()
        server.server_close()
    assert len(clients) == 64
