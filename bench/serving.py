"""Serving through ``mlflow models serve --env-manager local``: ours, mlflow.tensorflow, identity.

Each model gets its own server on a free loopback port (one uvicorn worker, as MLflow defaults
to), then :mod:`bench.loadgen` runs in its own process at 1 and 4 concurrent clients with a
bounded number of requests. The identity ``PythonModel`` measures the scoring server's own
ceiling: the best any flavor can do on this machine.
"""

import json
import os
import subprocess
import sys

from bench.isolation import REPO_ROOT, RESULT_MARKER, worker_env
from bench.models import example_batch
from tests.support.servers import ServerProcess, free_port, mlflow_command

CLIENTS = (1, 4)


def _serve(model_dir, log_path):
    port = free_port()
    command = mlflow_command(
        "models", "serve", "-m", model_dir, "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port), "-w", "1",
    )
    return ServerProcess(command, f"http://127.0.0.1:{port}/ping", log_path, env=worker_env())


def _load(url, payload_file, clients, requests, timeout):
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", url, payload_file, str(clients), str(requests)],
        cwd=REPO_ROOT, env=worker_env(), capture_output=True, text=True, timeout=timeout,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"load generator failed: {proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(RESULT_MARKER):])
    if result["errors"]:
        raise RuntimeError(f"{url}: {result['errors']} requests failed")
    return result


def measure(workdir, servers, kind, requests, slow_requests, repeats):
    """``{server: {clients: result}}`` for ``servers`` ``{name: (model dir, is_slow)}``.

    All servers run at once and the load runs alternate between them, ``repeats`` times, so a
    burst of load from elsewhere on the machine hits every server alike; a result holds the
    median requests/s, p50 and p99 over the repeats. Slow servers (mlflow.tensorflow's ~30
    requests/s) get ``slow_requests`` per run so the benchmark stays bounded.
    """
    import contextlib

    import numpy as np

    payload_file = os.path.join(workdir, "payload.json")
    with open(payload_file, "w") as f:
        json.dump({"inputs": example_batch(kind, 1).tolist()}, f)
    runs = {name: {str(c): [] for c in CLIENTS} for name in servers}
    with contextlib.ExitStack() as stack:
        started = {}
        for name, (model_dir, slow) in servers.items():
            log_path = os.path.join(workdir, f"serve-{name.replace(' ', '_').replace(':', '')}.log")
            started[name] = (stack.enter_context(_serve(model_dir, log_path)), slow)
        for _ in range(repeats):
            for clients in CLIENTS:
                for name, (server, slow) in started.items():
                    count = slow_requests if slow else requests
                    runs[name][str(clients)].append(
                        _load(server.url("/invocations"), payload_file, clients, count, timeout=600)
                    )
    return {
        name: {
            clients: {
                "requests": sum(r["requests"] for r in results),
                "requests_per_second": float(np.median([r["requests_per_second"] for r in results])),
                "p50_seconds": float(np.median([r["p50_seconds"] for r in results])),
                "p99_seconds": float(np.median([r["p99_seconds"] for r in results])),
            }
            for clients, results in by_clients.items()
        }
        for name, by_clients in runs.items()
    }
