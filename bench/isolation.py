"""Running one measurement in a fresh Python process and reading its result back.

A worker is ``python -m bench.worker TASK JSON_ARGS``; it prints its result as one JSON line
prefixed with :data:`RESULT_MARKER` (TensorFlow and MLflow print their own lines around it).
"""

import json
import os
import subprocess
import sys
import time

RESULT_MARKER = "BENCH_RESULT "
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_env(**extra):
    """The environment of a worker: quiet TensorFlow, the venv's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    # MLflow's progress bars and telemetry would add work (and output) to timed sections.
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_worker(task, args, timeout=600):
    """Runs ``bench.worker`` ``task`` with ``args`` in a new process; returns its JSON result."""
    command = [sys.executable, "-m", "bench.worker", task, json.dumps(args)]
    return _run(command, timeout, what=task)


def run_snippet(code, timeout=300):
    """Runs ``python -c code`` (no harness import at all); returns its JSON result.

    The result also gets ``spawned_at``, the parent's ``time.time()`` just before the process
    started, so a snippet that reports ``time.time()`` at its end gives a cold-start duration
    that includes interpreter start-up.
    """
    spawned_at = time.time()
    result = _run([sys.executable, "-c", code], timeout, what=code.splitlines()[0])
    result["spawned_at"] = spawned_at
    return result


def _run(command, timeout, what):
    proc = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"Benchmark worker {what!r} failed (exit {proc.returncode}).\n"
            f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-5000:]}"
        )
    return json.loads(lines[-1][len(RESULT_MARKER):])


def emit(result):
    """Called by workers: prints ``result`` where :func:`run_worker` finds it."""
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
