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
from tests.servers import ServerProcess, free_port, mlflow_command

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


def measure(workdir, servers, kind, requests, slow_requests):
    """``{server: {clients: loadgen result}}`` for ``servers`` ``{name: (model dir, is_slow)}``.

    Slow servers (mlflow.tensorflow's ~30 requests/s) get ``slow_requests`` so runs stay bounded.
    """
    payload_file = os.path.join(workdir, "payload.json")
    with open(payload_file, "w") as f:
        json.dump({"inputs": example_batch(kind, 1).tolist()}, f)
    results = {}
    for name, (model_dir, slow) in servers.items():
        log_path = os.path.join(workdir, f"serve-{name.replace(' ', '_').replace(':', '')}.log")
        with _serve(model_dir, log_path) as server:
            count = slow_requests if slow else requests
            results[name] = {
                str(c): _load(server.url("/invocations"), payload_file, c, count, timeout=600)
                for c in CLIENTS
            }
    return results
