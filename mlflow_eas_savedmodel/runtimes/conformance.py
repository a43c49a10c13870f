"""Run a SavedModel in the real TensorFlow runtime of a PAI-EAS processor.

:func:`run_in_runtime` builds (once, cached) the environment of the runtime with the official
wheel (:func:`~mlflow_eas_savedmodel.runtimes.environments.ensure_runtime`), then runs
``_runner.py`` in it in a subprocess: the C++ loader through the C API
(``TF_LoadSessionFromSavedModel``, what EAS's processors use) and ``TF_SessionRun`` on every
requested signature, then the Python TF1 loader and ``Session.run``.

This module does not import TensorFlow.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence
from urllib.parse import quote, unquote

import numpy as np
from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.runtimes._npz_format import pack_arrays, unpack_arrays
from mlflow_eas_savedmodel.runtimes.environments import ensure_runtime

__all__ = ["RuntimeRun", "run_in_runtime", "RUNNER_PATH"]

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
    c_api_error: Optional[str]
    python_load_ok: bool  # tf.compat.v1.saved_model.loader.load succeeded
    python_error: Optional[str]
    # Python loader + Session.run outputs: outputs[signature][output_key]
    outputs: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)
    # C API TF_SessionRun outputs (what EAS's C++ processor computes), same layout
    c_api_outputs: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)
    c_api_run_errors: Dict[str, str] = field(default_factory=dict)
    python_run_errors: Dict[str, str] = field(default_factory=dict)
    tensorflow: str = ""  # tf.__version__ reported by the runtime
    seconds: float = 0.0  # wall time of the runner subprocess
    report: Dict[str, Any] = field(default_factory=dict)  # the runner's raw JSON report

    @property
    def ok(self) -> bool:
        """Both loaders loaded the model and every requested signature ran both ways."""
        return (
            self.c_api_load_ok
            and self.python_load_ok
            and not self.c_api_run_errors
            and not self.python_run_errors
        )


def array_name(signature, key):
    """The npz name of one input or output, as ``_runner.py`` reads and writes it (``/`` in
    SignatureDef names such as ``tensorflow/serving/regress`` percent-encoded)."""
    return "%s/%s" % (quote(signature, safe=""), quote(key, safe=""))


def split_array_name(name):
    signature, _, key = name.partition("/")
    return unquote(signature), unquote(key)


def _load_outputs(path: str) -> Dict[str, Dict[str, np.ndarray]]:
    out: Dict[str, Dict[str, np.ndarray]] = {}
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return out
    with np.load(path, allow_pickle=False) as data:
        arrays = unpack_arrays(data)
    for name, value in arrays.items():
        sig, key = split_array_name(name)
        out.setdefault(sig, {})[key] = value
    return out


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
        raise MlflowException("SavedModel directory %r does not exist" % saved_model_dir)
    env = ensure_runtime(tf_version)
    tmp = tempfile.mkdtemp(prefix="eas-runtime-%s-" % env.tf_version)
    try:
        inputs = os.path.join(tmp, "inputs.npz")
        # SignatureDefs without inputs have no array: the runner learns of them from this list.
        arrays = {"__signatures__": np.array([quote(s, safe="").encode() for s in feeds], dtype=bytes)}
        for sig, sig_feeds in feeds.items():
            for key, value in sig_feeds.items():
                arrays[array_name(sig, key)] = value
        with open(inputs, "wb") as fh:
            np.savez(fh, **pack_arrays(arrays))
        outputs = os.path.join(tmp, "outputs.npz")
        c_outputs = os.path.join(tmp, "c_api_outputs.npz")
        report_path = os.path.join(tmp, "report.json")
        cmd = [
            env.python,
            RUNNER_PATH,
            os.path.abspath(saved_model_dir),
            inputs,
            outputs,
            "--c-api-outputs",
            c_outputs,
            "--report",
            report_path,
            "--tags",
            ",".join(tags),
        ]
        child_env = {
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")
        }
        child_env.update(
            TF_CPP_MIN_LOG_LEVEL="3",
            PYTHONWARNINGS="ignore",
            PYTHONNOUSERSITE="1",
            CUDA_VISIBLE_DEVICES=child_env.get("CUDA_VISIBLE_DEVICES", "-1"),
        )
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=tmp,
            env=child_env,
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
            partial = _read_json(report_path)
            raise MlflowException(
                "Running %s in the TensorFlow %s runtime timed out after %.0f s (partial report: "
                "%s)" % (saved_model_dir, env.tf_version, timeout, json.dumps(partial))
            )
        seconds = time.monotonic() - start
        report = _parse_report(stdout) or _read_json(report_path) or {}
        err_tail = stderr.decode("utf-8", "replace")[-3000:]
        if proc.returncode != 0 or "python_loader" not in report:
            report.setdefault("runner_exit_code", proc.returncode)
            report.setdefault("runner_stderr", err_tail)
        crash = None
        if proc.returncode != 0:
            crash = "runner exited with code %s; stderr: %s" % (proc.returncode, err_tail)
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
            outputs=_load_outputs(outputs),
            c_api_outputs=_load_outputs(c_outputs),
            c_api_run_errors=dict(c_api.get("run_errors") or {}),
            python_run_errors=dict(py.get("run_errors") or {}),
            tensorflow=report.get("tensorflow", ""),
            seconds=round(seconds, 2),
            report=report,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _parse_report(stdout: bytes) -> Optional[dict]:
    for line in reversed(stdout.decode("utf-8", "replace").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
