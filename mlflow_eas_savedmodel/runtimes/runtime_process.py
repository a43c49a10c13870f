"""Run a SavedModel in the real TensorFlow runtime of a PAI-EAS processor, in a subprocess.

:func:`run_in_runtime` builds (once, cached) the environment of the runtime with the official
wheel (:func:`~mlflow_eas_savedmodel.runtimes.environments.ensure_runtime`), then runs
``_runner.py`` with that environment's old interpreter in a child process: the C++ loader
through the C API (``TF_LoadSessionFromSavedModel``, what EAS's processors use) and
``TF_SessionRun`` on every requested signature, then the Python TF1 loader and
``Session.run``. Arrays cross in ``.npz`` files (:mod:`._npz_format`), the runner's findings
as a JSON report; what came back is one :class:`RuntimeRun`.

This module does not import TensorFlow.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np

from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.runtimes._npz_format import (
    SIGNATURES_ARRAY,
    array_name,
    pack_arrays,
    split_array_name,
    unpack_arrays,
)
from mlflow_eas_savedmodel.runtimes.environments import ensure_runtime

__all__ = ["RuntimeRun", "run_in_runtime", "run_many_in_runtime", "RUNNER_PATH"]

RUNNER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_runner.py")
DEFAULT_TIMEOUT = 300.0


@dataclass
class RuntimeRun:
    """What one SavedModel did in one EAS runtime."""

    tf_version: str  # runtime, e.g. "1.15"
    python: str  # the runtime's interpreter
    python_version: str  # e.g. "3.7.16"
    wheel: str  # e.g. "tensorflow-cpu==1.15.0"
    c_api_load_ok: bool  # TF_LoadSessionFromSavedModel (the C++ loader EAS uses) succeeded
    c_api_error: str | None
    python_load_ok: bool  # tf.compat.v1.saved_model.loader.load succeeded
    python_error: str | None
    # Python loader + Session.run outputs: outputs[signature][output_key]
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # C API TF_SessionRun outputs (what EAS's C++ processor computes), same layout
    c_api_outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    c_api_run_errors: dict[str, str] = field(default_factory=dict)
    python_run_errors: dict[str, str] = field(default_factory=dict)
    tensorflow: str = ""  # tf.__version__ reported by the runtime
    seconds: float = 0.0  # wall time of the runner subprocess
    report: dict[str, Any] = field(default_factory=dict)  # the runner's raw JSON report

    @property
    def ok(self) -> bool:
        """Both loaders loaded the model and every requested signature ran both ways."""
        return (
            self.c_api_load_ok
            and self.python_load_ok
            and not self.c_api_run_errors
            and not self.python_run_errors
        )


@dataclass(frozen=True)
class _RunnerFiles:
    """The files one runner subprocess reads and writes, in its own temporary folder."""

    folder: str

    @property
    def inputs(self):
        return os.path.join(self.folder, "inputs.npz")

    @property
    def outputs(self):
        return os.path.join(self.folder, "outputs.npz")

    @property
    def c_api_outputs(self):
        return os.path.join(self.folder, "c_api_outputs.npz")

    @property
    def report(self):
        return os.path.join(self.folder, "report.json")


def run_in_runtime(
    saved_model_dir: str,
    tf_version: str,
    feeds: Mapping[str, Mapping[str, Any]],
    timeout: float = DEFAULT_TIMEOUT,
    tags: Sequence[str] = ("serve",),
) -> RuntimeRun:
    """Load ``saved_model_dir`` in EAS runtime ``tf_version`` and run the signatures in ``feeds``.

    ``feeds`` maps signature name -> input key -> array (strings as ``str``/``bytes``
    arrays).  Raises ``MlflowException`` if the runtime cannot be built or the runner exceeds
    ``timeout`` seconds; a model that fails to load is a normal result (``*_load_ok`` False,
    the error text in ``*_error``).
    """
    if not os.path.isdir(saved_model_dir):
        raise invalid_parameter_value(
            f"SavedModel directory {saved_model_dir!r} does not exist. Pass the folder that holds "
            "saved_model.pb."
        )
    env = ensure_runtime(tf_version)
    files = _RunnerFiles(tempfile.mkdtemp(prefix=f"eas-runtime-{env.tf_version}-"))
    try:
        _write_inputs(files.inputs, feeds)
        cmd = [
            env.python, RUNNER_PATH, os.path.abspath(saved_model_dir), files.inputs, files.outputs,
            "--c-api-outputs", files.c_api_outputs, "--report", files.report, "--tags", ",".join(tags),
        ]
        start = time.monotonic()
        returncode, stdout, stderr = _run_runner(cmd, files, timeout, saved_model_dir, env.tf_version)
        seconds = time.monotonic() - start
        report = _parse_report(stdout) or _read_json(files.report) or {}
        return _runtime_run(env, files, report, returncode, stderr, seconds)
    finally:
        shutil.rmtree(files.folder, ignore_errors=True)


def run_many_in_runtime(
    models: Mapping[str, tuple],
    tf_version: str,
    timeout: float = DEFAULT_TIMEOUT,
    tags: Sequence[str] = ("serve",),
) -> dict[str, RuntimeRun]:
    """:func:`run_in_runtime` for several SavedModels in ONE runtime process.

    ``models`` maps a key of the caller's choosing -> ``(saved_model_dir, feeds)``; the result
    maps the same keys -> :class:`RuntimeRun`. One interpreter start and one TensorFlow import
    serve them all (each model gets its own graphs and sessions); ``seconds`` of each run is
    the whole batch's wall time. ``timeout`` bounds the whole batch.
    """
    for saved_model_dir, _ in models.values():
        if not os.path.isdir(saved_model_dir):
            raise invalid_parameter_value(
                f"SavedModel directory {saved_model_dir!r} does not exist. Pass the folder that "
                "holds saved_model.pb."
            )
    env = ensure_runtime(tf_version)
    root = tempfile.mkdtemp(prefix=f"eas-runtime-{env.tf_version}-batch-")
    try:
        jobs, files = [], {}
        for i, (key, (saved_model_dir, feeds)) in enumerate(models.items()):
            folder = os.path.join(root, str(i))
            os.mkdir(folder)
            files[key] = _RunnerFiles(folder)
            _write_inputs(files[key].inputs, feeds)
            jobs.append({
                "saved_model_dir": os.path.abspath(saved_model_dir), "inputs": files[key].inputs,
                "outputs": files[key].outputs, "c_api_outputs": files[key].c_api_outputs,
                "report": files[key].report,
            })
        manifest = os.path.join(root, "jobs.json")
        with open(manifest, "w") as fh:
            json.dump(jobs, fh)
        cmd = [env.python, RUNNER_PATH, "--batch", manifest, "--tags", ",".join(tags)]
        start = time.monotonic()
        returncode, _, stderr = _run_runner(
            cmd, _RunnerFiles(root), timeout, f"{len(jobs)} SavedModels", env.tf_version
        )
        seconds = time.monotonic() - start
        return {
            key: _runtime_run(env, f, _read_json(f.report) or {}, returncode, stderr, seconds)
            for key, f in files.items()
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _write_inputs(path, feeds):
    # SignatureDefs without inputs have no array: the runner learns of them from this list.
    arrays = {SIGNATURES_ARRAY: np.array([quote(s, safe="").encode() for s in feeds], dtype=bytes)}
    for sig, sig_feeds in feeds.items():
        for key, value in sig_feeds.items():
            arrays[array_name(sig, key)] = value
    with open(path, "wb") as fh:
        np.savez(fh, **pack_arrays(arrays))


def _runner_environment():
    """This process's environment, minus what would let the old interpreter import ours."""
    # TF2_BEHAVIOR: importing TF 2.x sets it to 1 in this process; inherited, it would turn the
    # old runtime's v2 behaviour on (eager execution in 1.15), which no EAS processor runs with.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "TF2_BEHAVIOR")}
    env.update(
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONWARNINGS="ignore",
        PYTHONNOUSERSITE="1",
        CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", "-1"),
    )
    return env


def _run_runner(cmd, files, timeout, saved_model_dir, tf_version):
    """``(returncode, stdout, stderr)`` of the runner; past ``timeout`` its process group dies."""
    proc = subprocess.Popen(
        cmd,
        cwd=files.folder,
        env=_runner_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        proc.communicate()
        partial = _read_json(files.report)
        raise invalid_parameter_value(
            f"Running {saved_model_dir} in the TensorFlow {tf_version} runtime timed out after "
            f"{timeout:.0f} s (partial report: {json.dumps(partial)}). Pass a larger timeout "
            "(timeout=SECONDS, check-runtime --timeout SECONDS)."
        ) from None
    return proc.returncode, stdout, stderr


def _runtime_run(env, files, report, returncode, stderr, seconds):
    """The :class:`RuntimeRun` of one runner process; a crash is a load failure, not an error."""
    err_tail = stderr.decode("utf-8", "replace")[-3000:]
    if returncode != 0 or "python_loader" not in report:
        report.setdefault("runner_exit_code", returncode)
        report.setdefault("runner_stderr", err_tail)
    crash = f"runner exited with code {returncode}; stderr: {err_tail}" if returncode != 0 else None
    c_api = report.get("c_api") or {"load_ok": False, "error": crash or "not run"}
    py = report.get("python_loader") or {"load_ok": False, "error": crash or "not run"}
    return RuntimeRun(
        tf_version=env.tf_version,
        python=env.python,
        python_version=report.get("python") or env.interpreter_version,
        wheel=env.wheel,
        c_api_load_ok=bool(c_api.get("load_ok")),
        c_api_error=c_api.get("error"),
        python_load_ok=bool(py.get("load_ok")),
        python_error=py.get("error"),
        outputs=_load_outputs(files.outputs),
        c_api_outputs=_load_outputs(files.c_api_outputs),
        c_api_run_errors=dict(c_api.get("run_errors") or {}),
        python_run_errors=dict(py.get("run_errors") or {}),
        tensorflow=report.get("tensorflow", ""),
        seconds=round(seconds, 2),
        report=report,
    )


def _load_outputs(path: str) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return out
    with np.load(path, allow_pickle=False) as data:
        arrays = unpack_arrays(data)
    for name, value in arrays.items():
        sig, key = split_array_name(name)
        out.setdefault(sig, {})[key] = value
    return out


def _parse_report(stdout: bytes) -> dict | None:
    for line in reversed(stdout.decode("utf-8", "replace").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
