"""Cached virtual environments on an old CPython: the one builder behind every such venv.

The EAS runtimes (:mod:`.environments`: an official TensorFlow wheel on CPython 3.6-3.9) and
the official ``eas-prediction`` client (:mod:`mlflow_eas_savedmodel.eas.official_client`, whose
protobuf pin cannot live beside TensorFlow 2.21) each need a venv with pinned packages on a
CPython this package does not run on. :func:`ensure_venv` builds one from a :class:`VenvSpec`
once and reuses it afterwards:

* ``<path>/`` is the venv, ``<path>.build.log`` the commands of its last build with their
  output, ``<path>.lock`` a lock file that keeps two processes from building it at once.
* A marker file in the venv records what was installed; it is written last, after the install
  and an import check succeeded, so an interrupted build is redone, and a venv whose marker
  does not match its spec any more (the pins changed) is rebuilt.
* Each stage is logged at INFO on the caller's logger as ``<label>: <stage> (<n> s elapsed)``
  when it starts and again every :data:`PROGRESS_INTERVAL_S` while it runs; a timeout bounds
  the whole build, the wait for another process's build included.

Venvs live under :func:`cache_root`. The interpreters come from :func:`find_interpreter`.

This module does not import TensorFlow.
"""

import contextlib
import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.errors import invalid_parameter_value

CACHE_ENV_VAR = "MLFLOW_EAS_SAVEDMODEL_CACHE"
PROGRESS_INTERVAL_S = 15.0
# Without a timeout a build still gives up waiting for another process's lock after an hour.
_LOCK_WAIT_S = 3600.0


def cache_root():
    """``$MLFLOW_EAS_SAVEDMODEL_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/mlflow-eas-savedmodel``."""
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return os.path.abspath(os.path.expanduser(override))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(xdg), "mlflow-eas-savedmodel")


# ---------------------------------------------------------------------------------------
# Interpreters
# ---------------------------------------------------------------------------------------


def _interpreter_version(python):
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


def _matches(python, python_minor):
    version = _interpreter_version(python)
    return version is not None and ".".join(version.split(".")[:2]) == python_minor


def _candidates(python_minor):
    cands = []

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
    pattern = re.compile(rf"^{re.escape(python_minor)}\.(\d+)$")
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


def find_interpreter(python_minor, purpose=None):
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
    needed_by = f" ({purpose})" if purpose else ""
    raise invalid_parameter_value(
        f"No CPython {python_minor} interpreter found{needed_by}. Install one with "
        f"`pyenv install {python_minor}` or `uv python install {python_minor}` (looked in "
        f"`uv python find`, ~/.pyenv/versions/{python_minor}.*, `pyenv root` and "
        f"python{python_minor} on PATH)."
    )


# ---------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VenvSpec:
    """One cached venv: where it lives, what goes into it, and how its build reports."""

    path: str  # the venv directory; the build log and the lock file sit beside it
    marker_name: str  # the marker file's name inside the venv
    marker: dict  # what identifies this build; a venv whose marker differs is rebuilt
    python_minor: str  # "3.7": the CPython the venv is built from
    requirements: tuple  # installed with one pip call
    import_check: str  # a module that must import in the built venv, e.g. "tensorflow"
    label: str  # prefix of the INFO log lines, e.g. "TF 1.15 runtime"
    description: str  # in messages: "Building the <description> environment ..."
    pip: str = None  # the pip to upgrade to before installing (None: keep the venv's pip)
    purpose: str = None  # what needs the interpreter, for the missing-interpreter message
    timeout_fix: str = ""  # how to give a build more time, appended to the timeout message


def venv_python(path):
    """The python executable of the venv at ``path``."""
    return os.path.join(path, "bin", "python")


def read_marker(spec):
    """The marker of a complete build of ``spec``, or None if it must be (re)built."""
    try:
        with open(os.path.join(spec.path, spec.marker_name)) as fh:
            marker = json.load(fh)
    except (OSError, ValueError):
        return None
    if any(marker.get(key) != value for key, value in spec.marker.items()):
        return None  # the spec changed since: rebuild
    if not os.path.exists(venv_python(spec.path)):
        return None
    return marker


def ensure_venv(spec, logger, timeout=None):
    """Build (once, then cached) the venv of ``spec``; returns ``(python, marker)``.

    ``timeout`` bounds a build in seconds, the wait for another process's build included
    (``None``: no bound): past it the build is stopped, the partial venv removed, and an
    ``MlflowException`` says how to give it more time (``spec.timeout_fix``). A failing
    command is an ``MlflowException`` ending with the tail of the build log.
    """
    marker = read_marker(spec)
    if marker is None:
        progress = _Progress(spec, logger, None if timeout is None else time.monotonic() + timeout)
        progress.stage(f"building the environment (first use; cached afterwards under {spec.path})")
        waiting = "waiting for another process building it"
        try:
            with _file_lock(spec.path + ".lock", timeout=_LOCK_WAIT_S if timeout is None else timeout,
                            on_wait=lambda: progress.stage(waiting)):
                marker = read_marker(spec)  # another process may have built it meanwhile
                if marker is None:
                    interpreter = find_interpreter(spec.python_minor, purpose=spec.purpose)
                    marker = _build(spec, interpreter, progress)
        except TimeoutError:
            raise progress.timed_out(waiting) from None
    return venv_python(spec.path), marker


@contextlib.contextmanager
def _file_lock(path, timeout, on_wait=None):
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


class _Progress:
    """Logs the stages of one build with the seconds elapsed; enforces its deadline."""

    def __init__(self, spec, logger, deadline):
        self.spec = spec
        self.logger = logger
        self.deadline = deadline
        self.start = time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.start

    def stage(self, what):
        self.logger.info("%s: %s (%.0f s elapsed)", self.spec.label, what, self.elapsed())

    def remaining(self):
        return None if self.deadline is None else self.deadline - time.monotonic()

    def timed_out(self, what):
        return invalid_parameter_value(
            f"Building the {self.spec.description} environment did not finish within the timeout "
            f"({self.elapsed():.0f} s so far, while {what}); the partial build is discarded and "
            f"redone next time. {self.spec.timeout_fix}".rstrip()
        )


def _run(cmd, log, progress, what):
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    progress.stage(what)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    while True:
        remaining = progress.remaining()
        wait = PROGRESS_INTERVAL_S if remaining is None else max(0.0, min(PROGRESS_INTERVAL_S, remaining))
        try:
            returncode = proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            if progress.remaining() is not None and progress.remaining() <= 0:
                proc.kill()
                proc.wait()
                raise progress.timed_out(what) from None
            progress.stage(f"still {what}")
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, cmd)


def _build(spec, interpreter, progress):
    path = spec.path
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log_path = path + ".build.log"
    start = time.monotonic()
    with open(log_path, "w") as log:
        try:
            _run([interpreter, "-m", "venv", path], log, progress,
                 f"creating the venv in {path} with {interpreter}")
            py = venv_python(path)
            pip = [py, "-m", "pip", "--disable-pip-version-check", "--no-input"]
            if spec.pip:
                _run([*pip, "install", spec.pip], log, progress, f"installing {spec.pip}")
            _run([*pip, "install", *spec.requirements], log, progress,
                 f"installing {', '.join(spec.requirements)} (build log: {log_path})")
            # The install must have left a package that imports (and says its version in the log).
            check = f"import {spec.import_check} as m; print(getattr(m, '__version__', ''))"
            _run([py, "-c", check], log, progress, f"checking that {spec.import_check} imports")
        except MlflowException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        except subprocess.CalledProcessError as exc:
            log.flush()
            with open(log_path) as fh:
                tail = fh.read()[-4000:]
            raise invalid_parameter_value(
                f"Building the {spec.description} environment in {path} failed ({exc}). Fix what "
                f"the build log shows (often: PyPI unreachable, or no space left) and retry: the "
                f"next use builds it again. Build log {log_path} ends with:\n{tail}"
            ) from exc
    marker = {
        **spec.marker,
        "interpreter": interpreter,
        "interpreter_version": _interpreter_version(venv_python(path)),
        "build_seconds": round(time.monotonic() - start, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = os.path.join(path, spec.marker_name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(marker, fh, indent=1)
    os.replace(tmp, os.path.join(path, spec.marker_name))
    progress.stage(f"ready, cached in {path}")
    return marker
