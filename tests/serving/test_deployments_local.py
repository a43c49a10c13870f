"""``mlflow deployments run-local -t eas``: the EAS protocol served from the processor's own runtime.

The replica runs in the official TensorFlow 1.15 / 2.3 wheel (the cached check-runtime
environments); the official ``eas-prediction`` client talks to it and its answers are compared
with TensorFlow 2.21's (this package's handle). ``MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1`` runs
all six runtimes.
"""

import base64
import json
import os
import signal
import socket
import threading
import urllib.error
import urllib.request

from support import multi_signature
import numpy as np
import pytest
from conftest import runtime_versions
from support.servers import ServerProcess, free_port, log_tail, mlflow_command, server_env
from support.stores import sqlite_store

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.deployments import options as deploy_options
from mlflow_eas_savedmodel.eas import protocol
from mlflow_eas_savedmodel.eas.official_client import run_client_ops

VERSIONS = runtime_versions()
X = multi_signature.EAS_EXAMPLE
WORDS = np.array([b"a", b"zz", b"bb", "\u00e9".encode()], dtype=object)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tf):
    """A sqlite registry holding ``demo`` version 1 (alias ``champion``): ``multi_signature.EAS_MODEL``,
    ``serving_default`` (x float32 -> y float32, n int64) and ``lookup`` (strings)."""
    import mlflow

    root = tmp_path_factory.mktemp("deploy_local")
    with sqlite_store(root, "deploy-local") as uri:
        with multi_signature.session(tf, multi_signature.EAS_MODEL) as (sess, signatures):
            with mlflow.start_run():
                mes.log_model(
                    sess, name="model", registered_model_name="demo", input_example={"x": X}, signatures=signatures
                )
        mlflow.MlflowClient().set_registered_model_alias("demo", "champion", "1")
        handle = mes.load_model("models:/demo/1", device="cpu")
        yield {"uri": uri, "root": root, "handle": handle}


def _run_local(registry, version, tmp_path, name="svc", token=None):
    port = free_port()
    command = mlflow_command(
        "deployments", "run-local", "-t", "eas", "--name", name, "-m", "models:/demo@champion",
        "-C", f"processor=tensorflow_cpu_{version}", "-C", f"port={port}",
        *(["-C", f"token={token}"] if token else []),
    )
    env = server_env(MLFLOW_TRACKING_URI=registry["uri"], MLFLOW_REGISTRY_URI=registry["uri"])
    # The readiness probe: it answers once the model is loaded and warmed up, token or not.
    return ServerProcess(command, f"http://127.0.0.1:{port}/ping",
                         log_path=tmp_path / "run-local.log", env=env, timeout=240)


def _feed(name, array, code):
    values = np.asarray(array).reshape(-1).tolist()
    if code == protocol.DT_STRING:
        values = [base64.b64encode(v).decode() for v in values]
    return [name, list(np.shape(array)), code, values]


def _get(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _array(tensor):
    values = tensor["values"]
    if tensor["dtype"] == protocol.DT_STRING:
        return np.array([base64.b64decode(v) for v in values], dtype=object).reshape(tensor["shape"])
    dtype = {protocol.DT_FLOAT: np.float32, protocol.DT_INT64: np.int64}[tensor["dtype"]]
    return np.array(values, dtype=dtype).reshape(tensor["shape"])


def _post(url, body, headers=None):
    try:
        request = urllib.request.Request(url, data=body, headers=headers or {})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.runtime
@pytest.mark.server
@pytest.mark.parametrize("version", VERSIONS)
def test_run_local_answers_the_official_client_from_the_old_runtime(registry, version, tmp_path):
    handle = registry["handle"]
    # One runtime runs with -C token: EAS's gateway check (401 without Authorization: <token>).
    token = "s3cret" if version == VERSIONS[-1] else None
    auth = {"Authorization": token} if token else {}
    server = _run_local(registry, version, tmp_path, token=token)
    with server:
        url = server.url("/api/predict/svc")
        assert [_get(server.url(p))[0] for p in ("/ping", "/health")] == [200, 200]  # no token needed
        if token:
            unauthorized = b"Authorization failed: send the service token in the Authorization header"
            for headers in ({}, {"Authorization": "wrong"}):
                assert _get(url, headers)[0] == 401
                status, text = _post(url, protocol.encode_request({"x": X}), headers)
                assert status == 401 and unauthorized in text, text
        with urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=30) as resp:
            described = json.load(resp)
        assert described == {
            "signature_name": "serving_default",
            "inputs": [{"name": "x", "shape": [-1, 3], "type": "DT_FLOAT"}],
            "outputs": [{"name": "n", "shape": [-1], "type": "DT_INT64"},
                        {"name": "y", "shape": [-1, 2], "type": "DT_FLOAT"}],
            "tensorflow_version": {"1.12": "1.12.0", "1.14": "1.14.0"}.get(version, version + ".0"),
        }
        with urllib.request.urlopen(urllib.request.Request(url + "?signature_name=lookup", headers=auth),
                                    timeout=30) as resp:
            assert json.load(resp)["inputs"] == [{"name": "s", "shape": [-1], "type": "DT_STRING"}]

        base = {"op": "predict", "endpoint": server.url()[len("http://"):], "service": "svc", "token": token}
        default, lookup, filtered, by_tensor_name, unknown, wrong_dtype = run_client_ops([
            {**base, "signature_name": "serving_default", "feeds": [_feed("x", X, protocol.DT_FLOAT)]},
            {**base, "signature_name": "lookup", "feeds": [_feed("s", WORDS, protocol.DT_STRING)]},
            {**base, "signature_name": "lookup", "feeds": [_feed("s", WORDS, protocol.DT_STRING)], "fetches": ["ids"]},
            {**base, "signature_name": "", "feeds": [_feed("x", X, protocol.DT_FLOAT)], "fetches": ["n:0"]},
            {**base, "signature_name": "missing", "feeds": [_feed("x", X, protocol.DT_FLOAT)]},
            {**base, "signature_name": "serving_default", "feeds": [_feed("x", X.astype(np.float64), protocol.DT_DOUBLE)]},
        ])
        want = handle.predict({"x": X})
        np.testing.assert_allclose(_array(default["outputs"]["y"]), want["y"], rtol=1e-6)
        np.testing.assert_array_equal(_array(default["outputs"]["n"]), want["n"])
        want_lookup = handle.predict({"s": WORDS}, signature_name="lookup")
        np.testing.assert_array_equal(_array(lookup["outputs"]["ids"]), want_lookup["ids"])
        assert _array(lookup["outputs"]["echo"]).tolist() == WORDS.tolist()
        assert sorted(filtered["outputs"]) == ["ids"] and sorted(by_tensor_name["outputs"]) == ["n"]
        assert unknown["error_code"] == 400
        assert "Unknown signature_name 'missing'. This model has: ['lookup', 'serving_default']" in unknown["error"]
        assert wrong_dtype["error_code"] == 400
        assert "Input 'x' is DT_DOUBLE; signature 'serving_default' takes DT_FLOAT" in wrong_dtype["error"]

        # One C API session, many threads: each request gets its own answer.
        batches = [np.random.default_rng(i).standard_normal((i + 1, 3)).astype(np.float32) for i in range(8)]
        answers = [None] * len(batches)

        def call(i):
            answers[i] = protocol.decode_response(_post(url, protocol.encode_request({"x": batches[i]}), auth)[1])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for batch, got in zip(batches, answers):
            np.testing.assert_allclose(got["y"], handle.predict({"x": batch})["y"], rtol=1e-6)

        status, text = _post(url, b"\xff\xff\xff", auth)
        assert status == 400 and b"The body is not a serialized EAS PredictRequest" in text
        status, text = _post(server.url("/api/predict/other"), protocol.encode_request({"x": X}))
        assert status == 404 and b"this endpoint serves /api/predict/svc" in text

        # SIGTERM to the CLI stops the replica in the old runtime too; so does Ctrl-C, which the
        # terminal sends to the whole foreground process group. Both cleanly.
        stop = signal.SIGTERM if version == VERSIONS[0] else signal.SIGINT
        if stop == signal.SIGTERM:
            os.kill(server.process.pid, stop)
        else:
            os.killpg(server.process.pid, stop)
        assert server.process.wait(timeout=30) == 0, log_tail(server.log_path)
        log = server.log()
    assert "warm-up warm_up_serving_default.bin signature=serving_default" in log
    assert "(C++ loader)" in log and f"TensorFlow {described['tensorflow_version']}" in log
    assert "POST /api/predict/svc signature=lookup 200" in log and " ms" in log
    assert "POST /api/predict/svc signature=missing 400" in log
    assert f"signal {int(stop)}: stopping" in log and "eas-local: stopped" in log


def test_run_local_refuses_bad_options(registry):
    from mlflow.exceptions import MlflowException
    from mlflow_eas_savedmodel.deployments import run_local

    with pytest.raises(MlflowException, match=r"Unknown EAS processor 'tensorflow_gpu_9.9'. Use one of: tensorflow_cpu_1.12"):
        run_local("svc", "models:/demo/1", config={"processor": "tensorflow_gpu_9.9"})
    with pytest.raises(MlflowException, match=r"The eas target needs -C processor=\.\.\. here, e.g. -C processor=tensorflow_cpu_1.15"):
        run_local("svc", "models:/demo/1", config={})
    with pytest.raises(MlflowException, match=r"Unknown -C option\(s\) \['prot'\] for the eas target"):
        run_local("svc", "models:/demo/1", config={"processor": "tensorflow_cpu_1.15", "prot": "1"})
    with pytest.raises(MlflowException, match=r"-C port='x' must be a positive integer"):
        run_local("svc", "models:/demo/1", config={"processor": "tensorflow_cpu_1.15", "port": "x"})
    with pytest.raises(MlflowException, match=r"deploys the eas_savedmodel flavor only; got flavor 'python_function'"):
        run_local("svc", "models:/demo/1", flavor="python_function", config={"processor": "tensorflow_cpu_1.15"})


@pytest.mark.runtime
def test_run_local_fails_with_the_reason_when_the_port_is_taken(registry, capfd):
    from mlflow.exceptions import MlflowException
    from mlflow_eas_savedmodel.deployments import run_local

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(MlflowException, match=r"The local EAS replica of 'models:/demo/1' in TensorFlow "
                           f"{VERSIONS[0]} exited with code 4; its reason is printed above"):
            run_local("svc", "models:/demo/1", config={"processor": f"tensorflow_cpu_{VERSIONS[0]}", "port": str(port)})
    assert f"eas-local: cannot listen on 127.0.0.1:{port}" in capfd.readouterr().err


def test_target_help_documents_every_option():
    from mlflow.deployments import get_deploy_client
    from mlflow.deployments.interface import _target_help

    text = _target_help("eas")
    for option in deploy_options.OPTIONS:
        assert f"  {option.key} " in text
    assert "eas:/<region>" in text and "never against a live EAS service" in text
    client = get_deploy_client("eas:/cn-hangzhou")
    # The entry point of pyproject.toml is what MLflow found.
    assert type(client).__module__ == "mlflow_eas_savedmodel.deployments.client"
    assert client.default_region == "cn-hangzhou"
