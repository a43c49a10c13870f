"""Soak: servers under a steady mix of valid and abusive requests from 4 concurrent clients.

The model is ``tests/support/multi_signature.py``'s ``DECODER_MODEL`` (``serving_default``: image ->
scores; ``pair``: a, b -> total, doubled; the soak sends those two). Each soak sends a fixed
number of requests, paced over about ``SOAK_SECONDS`` (5 s by default, so CI stays in its time
budget; ``MLFLOW_EAS_SOAK_SECONDS=20`` or more spreads the same requests over a longer, gentler
soak), to a real server process on 127.0.0.1 (a server slower than the pace is sent them
back to back):

* every valid request is answered 200 with the right numbers;
* every invalid one (malformed body, wrong dtype, wrong shape, unequal batches, unknown
  signature...) gets a 4xx with a message; no 5xx ever;
* the server is alive at the end, and the RSS of its process tree grew by a bounded amount
  between warm-up and the end (a leak would grow with the request count).

The counts per request kind are printed (``pytest -s`` shows them). "No retracing per request":
the handle runs a finalized TF1 graph through session callables, so the proof is that the graph's
op count does not change over many predictions (``test_graph_is_frozen_across_predictions``).
"""

import json
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from support.multi_signature import WEIGHTS

import mlflow_eas_savedmodel as mes
from support.servers import ServerProcess, free_port, mlflow_command, server_env

SOAK_SECONDS = float(os.environ.get("MLFLOW_EAS_SOAK_SECONDS", "5"))
CLIENTS = 4
REQUESTS_PER_CLIENT = 150
# RSS may grow while allocator pools fill up after warm-up; a per-request leak of even 1 KiB
# would exceed this over 600 requests with big batches. Generous, but bounded.
RSS_GROWTH_LIMIT = 150 * 1024 * 1024


def test_graph_is_frozen_across_predictions(multi_signature_model):
    """No op is ever added per request: the op count is constant and the graph is finalized."""
    handle = mes.load_model(str(multi_signature_model), device="cpu")
    graph = handle.session.graph
    ops_before = len(graph.get_operations())
    rng = np.random.default_rng(0)
    for i in range(300):
        batch = int(rng.integers(1, 50))
        if i % 2:
            handle.predict(rng.random((batch, 4), dtype=np.float32))
        else:
            handle.predict({"a": rng.random((batch, 2)), "b": np.arange(batch)}, signature_name="pair")
    assert graph.finalized
    assert len(graph.get_operations()) == ops_before
    with pytest.raises(RuntimeError, match="Graph is finalized"):
        with graph.as_default():
            import tensorflow as tf

            tf.constant(1.0)


# ---- process-tree memory -----------------------------------------------------------------


def _children(pid):
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return kids


def tree_rss_bytes(pid):
    """VmRSS of ``pid`` and all its descendants (uvicorn workers included)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            todo.extend(_children(current))
        except OSError:
            continue
    return total


# ---- the soak driver ---------------------------------------------------------------------


def _soak(send, make_request, pid, label):
    """Runs 4 clients x ``REQUESTS_PER_CLIENT`` paced requests; returns counters and RSS."""
    interval = SOAK_SECONDS / REQUESTS_PER_CLIENT
    counts, failures = Counter(), []
    lock = threading.Lock()
    rss = {}
    warmup_done = threading.Barrier(CLIENTS)

    def client(index):
        rng = np.random.default_rng(index)
        session = requests.Session()
        start = time.monotonic()
        for i in range(REQUESTS_PER_CLIENT):
            if i == REQUESTS_PER_CLIENT // 10:
                # Every client has sent its warm-up share: take the baseline once.
                if warmup_done.wait(timeout=120) == 0:
                    rss["warm"] = tree_rss_bytes(pid)
            kind, body, headers, check = make_request(rng, i)
            try:
                response = send(session, body, headers)
                problem = check(response)
            except Exception as e:  # noqa: BLE001 - a client-side failure is a test failure
                problem = f"{type(e).__name__}: {e}"
                response = None
            with lock:
                counts[(kind, "sent")] += 1
                if problem is None:
                    counts[(kind, "as expected")] += 1
                else:
                    failures.append(f"{kind}: {problem}")
                if response is not None:
                    counts[("status", response.status_code)] += 1
            delay = start + (i + 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        session.close()

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(client, c) for c in range(CLIENTS)]:
            future.result(timeout=SOAK_SECONDS * 4 + 120)
    elapsed = time.monotonic() - started
    rss["end"] = tree_rss_bytes(pid)
    kinds = sorted({k for k, what in counts if k != "status"})
    print(f"\n{label}: {sum(counts[(k, 'sent')] for k in kinds)} requests in {elapsed:.1f} s, "
          f"{CLIENTS} clients; RSS warm {rss['warm'] / 2**20:.0f} MiB -> end {rss['end'] / 2**20:.0f} MiB")
    for kind in kinds:
        print(f"  {kind:<22} sent {counts[(kind, 'sent')]:>4}  as expected {counts[(kind, 'as expected')]:>4}")
    print("  statuses:", dict(sorted((s, n) for (k, s), n in counts.items() if k == "status")))
    return counts, failures, rss


def _assert_soak(counts, failures, rss, kinds):
    assert failures == [], failures[:10]
    for kind in kinds:
        assert counts[(kind, "sent")] > 0, f"{kind} never sent"
        assert counts[(kind, "as expected")] == counts[(kind, "sent")], kind
    statuses = {s for (k, s) in counts if k == "status"}
    assert not [s for s in statuses if s >= 500]
    assert rss["end"] - rss["warm"] < RSS_GROWTH_LIMIT, rss


def _expect_ok(extract, want):
    def check(response):
        if response.status_code != 200:
            return f"status {response.status_code}: {response.text[:300]}"
        got = extract(response)
        for key, value in want.items():
            if not np.allclose(np.asarray(got[key], dtype=np.float64), value, rtol=1e-4, atol=1e-4):
                return f"wrong {key}: {np.asarray(got[key])[:3]} != {np.asarray(value)[:3]}"
        return None

    return check


def _expect_4xx(*fragments):
    def check(response):
        if not 400 <= response.status_code < 500:
            return f"status {response.status_code} (want 4xx): {response.text[:300]}"
        text = response.text
        if not text.strip():
            return "4xx without a message"
        missing = [f for f in fragments if f not in text]
        return f"message lacks {missing}: {text[:300]}" if missing else None

    return check


# ---- mlflow models serve -----------------------------------------------------------------


def _mlflow_request(rng, i):
    """(kind, body, headers, check) for request ``i``: a fixed cycle of valid and invalid kinds."""
    json_headers = {"Content-Type": "application/json"}
    kind = MLFLOW_KINDS[i % len(MLFLOW_KINDS)]
    batch = int(rng.integers(1, 9))
    x = rng.random((batch, 4), dtype=np.float32)
    a, b = rng.random((batch, 2), dtype=np.float32), rng.integers(-50, 50, batch)
    predictions = lambda r: r.json()["predictions"]  # noqa: E731
    if kind == "valid_inputs":
        return kind, json.dumps({"inputs": {"image": x.tolist()}}), json_headers, _expect_ok(
            lambda r: {"scores": predictions(r)}, {"scores": x @ WEIGHTS}
        )
    if kind == "valid_pair_params":
        body = {"inputs": {"a": a.tolist(), "b": b.tolist()}, "params": {"signature_name": "pair"}}
        return kind, json.dumps(body), json_headers, _expect_ok(
            predictions, {"total": a.sum(axis=1) + b, "doubled": a * 2}
        )
    if kind == "valid_dataframe":
        body = {"dataframe_split": {"columns": ["c0", "c1", "c2", "c3"], "data": x.tolist()}}
        return kind, json.dumps(body), json_headers, _expect_ok(
            lambda r: {"scores": predictions(r)}, {"scores": x @ WEIGHTS}
        )
    if kind == "valid_big_batch":
        big = rng.random((5000, 4), dtype=np.float32)
        return kind, json.dumps({"inputs": {"image": big.tolist()}}), json_headers, _expect_ok(
            lambda r: {"scores": predictions(r)}, {"scores": big @ WEIGHTS}
        )
    if kind == "malformed_json":
        return kind, '{"inputs": {"image": [[1.0, 2.0', json_headers, _expect_4xx("valid JSON")
    if kind == "wrong_dtype":
        body = {"inputs": {"image": [["a", "b", "c", "d"]] * batch}}
        return kind, json.dumps(body), json_headers, _expect_4xx("dtype", "float32")
    if kind == "wrong_shape":
        return kind, json.dumps({"inputs": {"image": [[1.0, 2.0, 3.0]] * batch}}), json_headers, _expect_4xx("shape")
    if kind == "unequal_batches":
        # 2+ rows against one more: no broadcasting can reconcile them (1 row would broadcast).
        a2 = rng.random((batch + 1, 2)).tolist()
        body = {"inputs": {"a": a2, "b": list(range(batch + 2))}, "params": {"signature_name": "pair"}}
        return kind, json.dumps(body), json_headers, _expect_4xx("rejected the inputs")
    if kind == "oversized_values":
        body = {"inputs": {"a": a.tolist(), "b": [2**40] * batch}, "params": {"signature_name": "pair"}}
        return kind, json.dumps(body), json_headers, _expect_4xx("outside the range of int32")
    if kind == "unknown_signature":
        body = {"inputs": {"image": x.tolist()}, "params": {"signature_name": "nope"}}
        return kind, json.dumps(body), json_headers, _expect_4xx("Unknown signature_name 'nope'")
    if kind == "wrong_content_type":
        return kind, "image=1,2,3,4", {"Content-Type": "application/x-www-form-urlencoded"}, _expect_4xx("content types")
    assert kind == "empty_body"
    return kind, "", json_headers, _expect_4xx()


MLFLOW_KINDS = [
    "valid_inputs", "malformed_json", "valid_pair_params", "wrong_dtype", "valid_dataframe",
    "wrong_shape", "valid_inputs", "unequal_batches", "valid_pair_params", "unknown_signature",
    "valid_big_batch", "oversized_values", "wrong_content_type", "empty_body",
]


def test_soak_mlflow_models_serve(multi_signature_model, tmp_path):
    port = free_port()
    command = mlflow_command(
        "models", "serve", "-m", str(multi_signature_model), "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)
    )
    with ServerProcess(command, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", env=server_env()) as server:
        url = server.url("/invocations")

        def send(session, body, headers):
            return session.post(url, data=body, headers=headers, timeout=60)

        counts, failures, rss = _soak(send, _mlflow_request, server.process.pid, "mlflow models serve")
        assert server.alive(), server.log()[-3000:]
        assert requests.get(server.url("/ping"), timeout=10).status_code == 200
        _assert_soak(counts, failures, rss, set(MLFLOW_KINDS))


# ---- local EAS endpoint ------------------------------------------------------------------

EAS_KINDS = [
    "valid", "garbage", "valid_pair", "truncated", "valid", "wrong_dtype", "valid_big_batch",
    "wrong_shape", "valid_pair", "value_count", "unknown_signature", "unknown_output", "empty_body",
]


def _eas_request(rng, i):
    from mlflow_eas_savedmodel.eas import protocol

    kind = EAS_KINDS[i % len(EAS_KINDS)]
    headers = {"Content-Type": "application/octet-stream"}
    batch = int(rng.integers(1, 9))
    x = rng.random((batch, 4), dtype=np.float32)
    a, b = rng.random((batch, 2), dtype=np.float32), rng.integers(-50, 50, batch).astype(np.int32)

    def decoded(response):
        return protocol.decode_response(response.content)

    if kind == "valid":
        return kind, protocol.encode_request({"image": x}), headers, _expect_ok(decoded, {"scores": x @ WEIGHTS})
    if kind == "valid_pair":
        body = protocol.encode_request({"a": a, "b": b}, signature_name="pair", output_filter=["total"])
        return kind, body, headers, _expect_ok(decoded, {"total": a.sum(axis=1) + b})
    if kind == "valid_big_batch":
        big = rng.random((20000, 4), dtype=np.float32)
        return kind, protocol.encode_request({"image": big}), headers, _expect_ok(decoded, {"scores": big @ WEIGHTS})
    if kind == "garbage":
        return kind, rng.bytes(int(rng.integers(1, 300))), headers, _expect_4xx()
    if kind == "truncated":
        body = protocol.encode_request({"image": x})
        return kind, body[: int(rng.integers(1, len(body)))], headers, _expect_4xx()
    if kind == "wrong_dtype":
        body = protocol.encode_request({"image": np.array([["w"] * 4] * batch, dtype=object)})
        return kind, body, headers, _expect_4xx("dtype")
    if kind == "wrong_shape":
        return kind, protocol.encode_request({"image": x[:, :3]}), headers, _expect_4xx("shape")
    if kind == "value_count":
        request = protocol.build_request({"image": x})
        request.inputs["image"].array_shape.dim[0] += 1  # claims one row more than it carries
        return kind, request.SerializeToString(), headers, _expect_4xx("array_shape")
    if kind == "unknown_signature":
        return kind, protocol.encode_request({"image": x}, signature_name="nope"), headers, _expect_4xx("nope")
    if kind == "unknown_output":
        body = protocol.encode_request({"image": x}, output_filter=["nothing"])
        return kind, body, headers, _expect_4xx("output_filter")
    assert kind == "empty_body"  # an empty PredictRequest: no inputs
    return kind, b"", headers, _expect_4xx("image")


def test_soak_local_eas_endpoint(multi_signature_model, tmp_path):
    port = free_port()
    script = os.path.join(os.path.dirname(sys.executable), "mlflow-eas-savedmodel")
    command = [script, "serve-eas", str(multi_signature_model), "--name", "soak", "--port", str(port)]
    ready = f"http://127.0.0.1:{port}/api/predict/soak"
    with ServerProcess(command, ready, tmp_path / "eas.log", env=server_env()) as server:

        def send(session, body, headers):
            return session.post(ready, data=body, headers=headers, timeout=60)

        counts, failures, rss = _soak(send, _eas_request, server.process.pid, "local EAS endpoint")
        assert server.alive(), server.log()[-3000:]
        assert requests.get(ready, timeout=10).status_code == 200
        _assert_soak(counts, failures, rss, set(EAS_KINDS))
