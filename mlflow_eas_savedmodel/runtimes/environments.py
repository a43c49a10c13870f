"""Python environments that hold the official TensorFlow wheels behind PAI-EAS's processors.

EAS's built-in TensorFlow processors (``tensorflow_cpu_1.12`` ... ``tensorflow_cpu_2.7`` and
the GPU editions 1.12/1.14/1.15/2.4/2.7) run old TensorFlow releases.  To check that a
SavedModel really loads and answers there, we install the matching official PyPI wheel into
a virtual environment built on an old CPython and run the model in it (see
:mod:`mlflow_eas_savedmodel.runtimes.conformance`).

Environments are built on demand and cached under
``$MLFLOW_EAS_SAVEDMODEL_CACHE/runtimes/tf-<ver>/`` (default
``${XDG_CACHE_HOME:-~/.cache}/mlflow-eas-savedmodel/runtimes/tf-<ver>/``).  A marker file is
written only after a successful install, so an interrupted build is redone; a lock file keeps
two processes from building the same environment at once.

A build takes minutes on a new machine (the wheels are 100-400 MB): each stage is logged at INFO
on this module's logger as it starts, with the seconds elapsed, and again every
``PROGRESS_INTERVAL_S`` while it runs (``check-runtime`` prints these lines on stderr).
``ensure_runtime(..., timeout=)`` bounds the whole build, the wait for another process's build
included.

This module does not import TensorFlow.
"""

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.errors import invalid
from mlflow_eas_savedmodel.runtimes.processors import PROCESSORS

__all__ = [
    "RuntimeSpec",
    "RuntimeEnv",
    "TF_1_12",
    "TF_1_14",
    "TF_1_15",
    "TF_2_3",
    "TF_2_4",
    "TF_2_7",
    "RUNTIMES",
    "CACHE_ENV_VAR",
    "cache_root",
    "runtime_dir",
    "get_runtime_spec",
    "find_interpreter",
    "ensure_runtime",
]


@dataclass(frozen=True)
class RuntimeSpec:
    """How to build the environment of one EAS TensorFlow runtime."""

    tf_version: str  # "1.15"
    python_minor: str  # "3.7": the CPython minor version the official wheel is built for
    wheel: str  # the official wheel's requirement, e.g. "tensorflow-cpu==1.15.0"
    pins: Tuple[str, ...] = ()  # extra pins installed together with the wheel
    pip: Optional[str] = None  # pip to upgrade to before installing (None: keep venv's pip)

    @property
    def requirements(self) -> List[str]:
        return [self.wheel, *self.pins]


# The official wheels and pins that install and import cleanly from PyPI (measured).
TF_1_12 = RuntimeSpec("1.12", "3.6", "tensorflow==1.12.0", ("protobuf==3.19.6",), pip="pip==21.3.1")
TF_1_14 = RuntimeSpec("1.14", "3.7", "tensorflow==1.14.0", ("numpy==1.16.6", "protobuf==3.20.3"))
TF_1_15 = RuntimeSpec("1.15", "3.7", "tensorflow-cpu==1.15.0", ("numpy==1.16.6", "protobuf==3.20.3"))
TF_2_3 = RuntimeSpec("2.3", "3.8", "tensorflow-cpu==2.3.0", ("numpy==1.18.5", "protobuf==3.20.3"))
TF_2_4 = RuntimeSpec("2.4", "3.8", "tensorflow-cpu==2.4.0", ("numpy==1.19.5", "protobuf==3.20.3"))
TF_2_7 = RuntimeSpec("2.7", "3.9", "tensorflow-cpu==2.7.0", ("numpy==1.21.6", "protobuf==3.20.3"))

RUNTIMES: Dict[str, RuntimeSpec] = {
    spec.tf_version: spec for spec in (TF_1_12, TF_1_14, TF_1_15, TF_2_3, TF_2_4, TF_2_7)
}

CACHE_ENV_VAR = "MLFLOW_EAS_SAVEDMODEL_CACHE"
PROGRESS_INTERVAL_S = 15.0
_logger = logging.getLogger(__name__)
_MARKER = ".mlflow-eas-runtime.json"
_LOCK = ".lock"


@dataclass(frozen=True)
class RuntimeEnv:
    """A built environment: ``python`` runs the old interpreter with the wheel installed."""

    tf_version: str
    python: str  # path of the venv's python executable
    interpreter_version: str  # e.g. "3.7.16"
    wheel: str  # e.g. "tensorflow-cpu==1.15.0"
    path: str  # the venv directory


def get_runtime_spec(tf_version: str) -> RuntimeSpec:
    key = str(tf_version)
    if key.startswith("tensorflow_"):
        key = PROCESSORS.get(key, key)
    m = re.match(r"^(\d+)\.(\d+)(?:\.\d+)?$", key)
    if m:
        key = "%s.%s" % (m.group(1), m.group(2))
    if key not in RUNTIMES:
        raise invalid(
            "Unknown EAS TensorFlow runtime %r; known: %s"
            % (tf_version, ", ".join(sorted(RUNTIMES, key=_version_key)))
        )
    return RUNTIMES[key]


def _version_key(v: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def cache_root() -> str:
    """``$MLFLOW_EAS_SAVEDMODEL_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/mlflow-eas-savedmodel``."""
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return os.path.abspath(os.path.expanduser(override))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(xdg), "mlflow-eas-savedmodel")


def runtime_dir(tf_version: str) -> str:
    spec = get_runtime_spec(tf_version)
    return os.path.join(cache_root(), "runtimes", "tf-" + spec.tf_version)


# ---------------------------------------------------------------------------------------
# Interpreters
# ---------------------------------------------------------------------------------------


def _interpreter_version(python: str) -> Optional[str]:
    """Full version (``"3.7.16"``) of a CPython executable, or None if it does not run."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys, platform; "
             "print('%d.%d.%d' % sys.version_info[:3]); print(platform.python_implementation())"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=True,
        ).stdout.decode().split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) != 2 or out[1] != "CPython":
        return None
    return out[0]


def _matches(python: str, python_minor: str) -> bool:
    version = _interpreter_version(python)
    return version is not None and ".".join(version.split(".")[:2]) == python_minor


def _candidates(python_minor: str) -> List[str]:
    cands: List[str] = []

    # 1. uv's managed (and discovered) interpreters; uv on PATH or next to this interpreter.
    uv = shutil.which("uv")
    if not uv and os.path.exists(os.path.join(os.path.dirname(sys.executable), "uv")):
        uv = os.path.join(os.path.dirname(sys.executable), "uv")
    if uv:
        for args in (["python", "find", "--no-project", python_minor],
                     ["python", "find", python_minor]):  # older uv lacks --no-project
            try:
                res = subprocess.run(
                    [uv, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60
                )
            except (OSError, subprocess.SubprocessError):
                break
            if res.returncode == 0 and res.stdout.strip():
                cands.append(res.stdout.decode().strip().splitlines()[-1])
                break

    # 2. pyenv: ~/.pyenv, $PYENV_ROOT and `pyenv root`, newest patch release first.
    roots = [os.path.join(os.path.expanduser("~"), ".pyenv")]
    if os.environ.get("PYENV_ROOT"):
        roots.insert(0, os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv") or (
        os.path.join(roots[-1], "bin", "pyenv")
        if os.path.exists(os.path.join(roots[-1], "bin", "pyenv"))
        else None
    )
    if pyenv:
        try:
            res = subprocess.run(
                [pyenv, "root"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60
            )
            if res.returncode == 0 and res.stdout.strip():
                roots.append(res.stdout.decode().strip())
        except (OSError, subprocess.SubprocessError):
            pass
    pattern = re.compile(r"^%s\.(\d+)$" % re.escape(python_minor))
    for root in dict.fromkeys(roots):
        found = []
        for d in glob.glob(os.path.join(root, "versions", python_minor + ".*")):
            m = pattern.match(os.path.basename(d))
            if m:
                found.append((int(m.group(1)), os.path.join(d, "bin", "python")))
        cands.extend(p for _, p in sorted(found, reverse=True))

    # 3. PATH.
    for name in ("python" + python_minor, "python" + python_minor + "m"):
        p = shutil.which(name)
        if p:
            cands.append(p)
    return list(dict.fromkeys(c for c in cands if c and os.path.exists(c)))


def _missing_interpreter_error(python_minor: str, purpose: Optional[str] = None) -> MlflowException:
    return invalid(
        "No CPython %s interpreter found%s. Install one with `pyenv install %s` or "
        "`uv python install %s` (looked in `uv python find`, ~/.pyenv/versions/%s.*, "
        "`pyenv root` and python%s on PATH)."
        % (python_minor, " (%s)" % purpose if purpose else "", python_minor, python_minor,
           python_minor, python_minor)
    )


def find_interpreter(python_minor: str, purpose: Optional[str] = None) -> str:
    """Path of a CPython ``python_minor`` (e.g. ``"3.7"``) interpreter.

    Looks through ``uv python find``, pyenv (``~/.pyenv/versions/X.Y.*/bin/python`` and
    ``pyenv root``) and ``pythonX.Y`` on PATH, and checks that the candidate runs and is the
    right version.  Raises ``MlflowException(INVALID_PARAMETER_VALUE)`` naming the missing
    version and how to install it (``purpose``, if given, says what needs it).
    """
    python_minor = str(python_minor)
    for cand in _candidates(python_minor):
        if _matches(cand, python_minor):
            return cand
    raise _missing_interpreter_error(python_minor, purpose)


# ---------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: str, timeout: float = 3600.0, on_wait=None):
    """Exclusive inter-process lock on ``path`` (fcntl: the environments are POSIX venvs).

    ``on_wait()`` is called once if another process holds it.
    """
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("Timed out waiting for lock " + path)
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _venv_python(path: str) -> str:
    return os.path.join(path, "bin", "python")


def _read_marker(path: str, spec: RuntimeSpec) -> Optional[dict]:
    try:
        with open(os.path.join(path, _MARKER)) as fh:
            marker = json.load(fh)
    except (OSError, ValueError):
        return None
    if marker.get("requirements") != spec.requirements or marker.get("pip") != spec.pip:
        return None  # the table changed since: rebuild
    if not os.path.exists(_venv_python(path)):
        return None
    return marker


class _Progress:
    """Logs the stages of one build with the seconds elapsed; enforces its deadline."""

    def __init__(self, tf_version: str, deadline: Optional[float]):
        self.tf_version = tf_version
        self.deadline = deadline
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def stage(self, what: str) -> None:
        _logger.info("TF %s runtime: %s (%.0f s elapsed)", self.tf_version, what, self.elapsed())

    def remaining(self) -> Optional[float]:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def timed_out(self, what: str) -> MlflowException:
        return invalid(
            "Building the TensorFlow %s runtime environment did not finish within the timeout "
            "(%.0f s so far, while %s); the partial build is discarded and redone next time. "
            "Pass a larger timeout (check-runtime --timeout SECONDS, e.g. --timeout 1800: the "
            "first build downloads 100-400 MB), or build it once beforehand with "
            "`python -m mlflow_eas_savedmodel.runtimes.environments %s`."
            % (self.tf_version, self.elapsed(), what, self.tf_version)
        )


def _run(cmd: List[str], log, progress: Optional[_Progress] = None, what: str = "") -> None:
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    if progress is not None:
        progress.stage(what)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    while True:
        wait = PROGRESS_INTERVAL_S
        remaining = progress.remaining() if progress is not None else None
        if remaining is not None:
            wait = max(0.0, min(wait, remaining))
        try:
            returncode = proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            if progress is None:
                continue
            if progress.remaining() is not None and progress.remaining() <= 0:
                proc.kill()
                proc.wait()
                raise progress.timed_out(what)
            progress.stage(f"still {what}")
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, cmd)


def _build(spec: RuntimeSpec, path: str, interpreter: str, progress: Optional[_Progress] = None) -> dict:
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log_path = path + ".build.log"
    start = time.monotonic()
    progress = progress or _Progress(spec.tf_version, None)
    with open(log_path, "w") as log:
        try:
            _run([interpreter, "-m", "venv", path], log, progress,
                 "creating the venv in %s with %s" % (path, interpreter))
            py = _venv_python(path)
            pip = [py, "-m", "pip", "--disable-pip-version-check", "--no-input"]
            if spec.pip:
                _run(pip + ["install", spec.pip], log, progress, "installing %s" % spec.pip)
            _run(pip + ["install", *spec.requirements], log, progress,
                 "installing %s (build log: %s)" % (", ".join(spec.requirements), log_path))
            # Import check: the wheel must import, with its own version.
            _run([py, "-c", "import tensorflow as tf; print(tf.__version__)"], log, progress,
                 "checking that tensorflow imports")
        except MlflowException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        except subprocess.CalledProcessError as exc:
            log.flush()
            with open(log_path) as fh:
                tail = fh.read()[-4000:]
            raise MlflowException(
                "Building the TensorFlow %s runtime environment in %s failed (%s). "
                "Build log %s ends with:\n%s" % (spec.tf_version, path, exc, log_path, tail)
            ) from exc
    marker = {
        "tf_version": spec.tf_version,
        "requirements": spec.requirements,
        "pip": spec.pip,
        "interpreter": interpreter,
        "interpreter_version": _interpreter_version(_venv_python(path)),
        "build_seconds": round(time.monotonic() - start, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = os.path.join(path, _MARKER + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(marker, fh, indent=1)
    os.replace(tmp, os.path.join(path, _MARKER))
    progress.stage("ready, cached in %s" % path)
    return marker


def ensure_runtime(tf_version: str, timeout: Optional[float] = None) -> RuntimeEnv:
    """Build (once, then cached) the venv of an EAS TensorFlow runtime and describe it.

    ``tf_version`` is ``"1.12"``, ``"1.14"``, ``"1.15"``, ``"2.3"``, ``"2.4"`` or ``"2.7"``
    (an EAS processor name such as ``"tensorflow_cpu_1.15"`` works too). ``timeout`` bounds a
    build (seconds, waiting for another process's build included; ``None``: no bound): past it
    the build is stopped and an ``MlflowException`` says how to give it more time.
    """
    spec = get_runtime_spec(tf_version)
    path = runtime_dir(spec.tf_version)
    marker = _read_marker(path, spec)
    if marker is None:
        progress = _Progress(spec.tf_version, None if timeout is None else time.monotonic() + timeout)
        progress.stage("building the environment (first use; cached afterwards under %s)" % path)
        lock = os.path.join(os.path.dirname(path), "tf-%s%s" % (spec.tf_version, _LOCK))
        try:
            with _file_lock(lock, timeout=3600.0 if timeout is None else timeout,
                            on_wait=lambda: progress.stage("waiting for another process building it")):
                marker = _read_marker(path, spec)  # another process may have built it meanwhile
                if marker is None:
                    interpreter = find_interpreter(
                        spec.python_minor,
                        purpose="needed by the EAS TensorFlow %s runtime: the official wheel %s "
                        "exists only for CPython %s" % (spec.tf_version, spec.wheel, spec.python_minor),
                    )
                    marker = _build(spec, path, interpreter, progress)
        except TimeoutError:
            raise progress.timed_out("waiting for another process building it") from None
    return RuntimeEnv(
        tf_version=spec.tf_version,
        python=_venv_python(path),
        interpreter_version=marker.get("interpreter_version") or "",
        wheel=spec.wheel,
        path=path,
    )


if __name__ == "__main__":  # python -m mlflow_eas_savedmodel.runtimes.environments 1.15 2.3
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for v in sys.argv[1:] or sorted(RUNTIMES, key=_version_key):
        t0 = time.monotonic()
        env = ensure_runtime(v)
        print(json.dumps(dict(env.__dict__, seconds=round(time.monotonic() - t0, 1))))
