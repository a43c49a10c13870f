"""One loaded model predicting from 8 threads at once returns what serial calls return."""

import threading
from concurrent.futures import ThreadPoolExecutor

from support import multi_signature
import numpy as np
import pytest

import mlflow_eas_savedmodel as mes

THREADS = 8
CALLS = 400


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tf):
    """A session model with three SignatureDefs of different work per call: ``serving_default``
    (64 -> 1024 -> softmax over 10), ``pair`` (a, b -> total, doubled) and ``words`` (-> upper)."""
    model = {"serving_default": "deep_softmax", "pair": "pair", "words": "upper"}
    return multi_signature.save(tf, tmp_path_factory.mktemp("threads") / "model", model)


def _requests(count):
    """``count`` requests with mixed signatures, input kinds and batch sizes 1-64."""
    rng = np.random.default_rng(1)
    requests = []
    for i in range(count):
        batch = int(rng.integers(1, 65))
        kind = i % 3
        if kind == 0:
            requests.append(("serving_default", rng.standard_normal((batch, 64)).astype(np.float32)))
        elif kind == 1:
            requests.append(("pair", {"a": rng.standard_normal((batch, 2)), "b": rng.integers(-9, 9, batch)}))
        else:
            words = np.array([f"w{j}-{rng.integers(1000)}" for j in range(batch)], dtype=object)
            requests.append(("words", {"words": words}))
    return requests


def _run_concurrently(call, requests):
    """Runs ``call(i, request)`` for every request on 8 threads released together."""
    start = threading.Barrier(THREADS)
    results = [None] * len(requests)
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most ever

    def worker(offset):
        start.wait(timeout=60)
        for i in range(offset, len(requests), THREADS):
            with lock:
                in_flight[0] += 1
                in_flight[1] = max(in_flight)
            results[i] = call(requests[i])
            with lock:
                in_flight[0] -= 1

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(worker, t) for t in range(THREADS)]:
            future.result(timeout=300)
    # Calls did overlap (else this test would prove nothing about concurrency).
    assert in_flight[1] >= 4, in_flight
    return results


def _assert_same(serial, concurrent):
    assert len(serial) == len(concurrent)
    for i, (want, got) in enumerate(zip(serial, concurrent)):
        want = want if isinstance(want, dict) else {"": want}
        got = got if isinstance(got, dict) else {"": got}
        assert sorted(want) == sorted(got), i
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"request {i} output {key!r}")


def test_handle_from_8_threads_matches_serial_calls(model_dir):
    handle = mes.load_model(str(model_dir), device="cpu")
    requests = _requests(CALLS)
    serial = [handle.predict(data, signature_name=name) for name, data in requests]
    concurrent = _run_concurrently(lambda r: handle.predict(r[1], signature_name=r[0]), requests)
    _assert_same(serial, concurrent)
    # The results are right, not only stable: check a few against numpy.
    name, data = requests[1]
    np.testing.assert_allclose(concurrent[1]["total"], data["a"].sum(axis=1) + data["b"], rtol=1e-5)
    assert [w.decode() for w in concurrent[2]["upper"]] == [w.upper() for w in requests[2][1]["words"]]
    assert all(np.allclose(r["scores"].sum(axis=1), 1, atol=1e-5) for r in concurrent[0::3])


def test_pyfunc_from_8_threads_matches_serial_calls(model_dir):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(model_dir), model_config={"device": "cpu"})
    requests = _requests(CALLS // 2)
    serial = [model.predict(data, params={"signature_name": name}) for name, data in requests]
    concurrent = _run_concurrently(lambda r: model.predict(r[1], params={"signature_name": r[0]}), requests)
    _assert_same(serial, concurrent)


def test_errors_in_some_threads_do_not_disturb_the_others(model_dir):
    from mlflow.exceptions import MlflowException

    handle = mes.load_model(str(model_dir), device="cpu")
    requests = _requests(120)
    bad = {"a": np.ones((3, 2)), "b": np.ones(4, np.int64)}  # unequal batch: fails in the graph

    def call(request):
        name, data = request
        try:
            handle.predict(bad, signature_name="pair")
        except MlflowException as e:
            assert "rejected the inputs" in e.message
        else:
            raise AssertionError("unequal batch sizes were accepted")
        return handle.predict(data, signature_name=name)

    serial = [handle.predict(data, signature_name=name) for name, data in requests]
    _assert_same(serial, _run_concurrently(call, requests))
