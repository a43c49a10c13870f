"""The environments of EAS's TensorFlow runtimes: each official wheel on its own old CPython.

EAS's built-in TensorFlow processors (``tensorflow_cpu_<version>`` and their GPU editions, see
:mod:`.processors`) run old TensorFlow releases.  To check that a SavedModel really loads and
answers there, we install the matching official PyPI wheel into a virtual environment built on
an old CPython (:data:`RUNTIMES`: the wheel, its pins and the CPython each needs, measured,
derived from the rows of :mod:`.table`) and run the model in it (see
:mod:`mlflow_eas_savedmodel.runtimes.runtime_process`).

:func:`ensure_runtime` builds an environment on demand with the cached-venv builder of
:mod:`.venvs` (marker written after a successful install, lock against concurrent builds) under
``$MLFLOW_EAS_SAVEDMODEL_CACHE/runtimes/tf-<ver>/`` (default
``${XDG_CACHE_HOME:-~/.cache}/mlflow-eas-savedmodel/runtimes/tf-<ver>/``).

A build takes minutes on a new machine (the wheels are 100-400 MB): each stage is logged at INFO
on this module's logger as it starts, with the seconds elapsed, and again every
``venvs.PROGRESS_INTERVAL_S`` while it runs (``check-runtime`` prints these lines on stderr).
``ensure_runtime(..., timeout=)`` bounds the whole build, the wait for another process's build
included.

This module does not import TensorFlow.
"""

import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass

from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.runtimes import table
from mlflow_eas_savedmodel.runtimes.processors import PROCESSORS
from mlflow_eas_savedmodel.runtimes.venvs import VenvSpec, cache_root, ensure_venv

__all__ = [
    "RuntimeSpec",
    "RuntimeEnv",
    "RUNTIMES",
    "runtime_specs",
    "runtime_dir",
    "get_runtime_spec",
    "ensure_runtime",
    "version_key",
]


@dataclass(frozen=True)
class RuntimeSpec:
    """How to build the environment of one EAS TensorFlow runtime."""

    tf_version: str  # "1.15"
    python_minor: str  # "3.7": the CPython minor version the official wheel is built for
    wheel: str  # the official wheel's requirement, e.g. "tensorflow-cpu==1.15.0"
    pins: tuple[str, ...] = ()  # extra pins installed together with the wheel
    pip: str | None = None  # pip to upgrade to before installing (None: keep venv's pip)

    @property
    def requirements(self) -> list[str]:
        return [self.wheel, *self.pins]


def runtime_specs(rows=None) -> dict[str, RuntimeSpec]:
    """``{version: RuntimeSpec}`` of the rows of :mod:`.table` (default: ``table.ROWS``): the
    official wheels and pins that install and import cleanly from PyPI (measured), oldest first."""
    rows = table.ROWS if rows is None else rows
    return {r.version: RuntimeSpec(r.version, r.python_minor, r.wheel, r.pins, r.pip) for r in rows}


RUNTIMES: dict[str, RuntimeSpec] = runtime_specs()

_logger = logging.getLogger(__name__)
_MARKER = ".mlflow-eas-runtime.json"


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
        key = f"{m.group(1)}.{m.group(2)}"
    if key not in RUNTIMES:
        raise invalid_parameter_value(
            f"Unknown EAS TensorFlow runtime {tf_version!r}; known: "
            f"{', '.join(sorted(RUNTIMES, key=version_key))}"
        )
    return RUNTIMES[key]


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def runtime_dir(tf_version: str) -> str:
    spec = get_runtime_spec(tf_version)
    return os.path.join(cache_root(), "runtimes", "tf-" + spec.tf_version)


def _venv_spec(spec: RuntimeSpec) -> VenvSpec:
    return VenvSpec(
        path=runtime_dir(spec.tf_version),
        marker_name=_MARKER,
        marker={"tf_version": spec.tf_version, "requirements": spec.requirements, "pip": spec.pip},
        python_minor=spec.python_minor,
        requirements=tuple(spec.requirements),
        import_check="tensorflow",
        label=f"TF {spec.tf_version} runtime",
        description=f"TensorFlow {spec.tf_version} runtime",
        pip=spec.pip,
        purpose=f"needed by the EAS TensorFlow {spec.tf_version} runtime: the official wheel "
        f"{spec.wheel} exists only for CPython {spec.python_minor}",
        timeout_fix="Pass a larger timeout (check-runtime --timeout SECONDS, e.g. --timeout 1800: "
        "the first build downloads 100-400 MB), or build it once beforehand with "
        f"`python -m mlflow_eas_savedmodel.runtimes.environments {spec.tf_version}`.",
    )


def ensure_runtime(tf_version: str, timeout: float | None = None) -> RuntimeEnv:
    """Build (once, then cached) the venv of an EAS TensorFlow runtime and describe it.

    ``tf_version`` is one of :data:`~.processors.RUNTIME_VERSIONS`, e.g. ``"1.15"`` (an EAS
    processor name such as ``"tensorflow_cpu_1.15"`` works too). ``timeout`` bounds a
    build (seconds, waiting for another process's build included; ``None``: no bound): past it
    the build is stopped and an ``MlflowException`` says how to give it more time.
    """
    spec = get_runtime_spec(tf_version)
    venv = _venv_spec(spec)
    python, marker = ensure_venv(venv, _logger, timeout=timeout)
    return RuntimeEnv(
        tf_version=spec.tf_version,
        python=python,
        interpreter_version=marker.get("interpreter_version") or "",
        wheel=spec.wheel,
        path=venv.path,
    )


if __name__ == "__main__":  # python -m mlflow_eas_savedmodel.runtimes.environments 1.15 2.3
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for v in sys.argv[1:] or sorted(RUNTIMES, key=version_key):
        t0 = time.monotonic()
        env = ensure_runtime(v)
        print(json.dumps(dict(env.__dict__, seconds=round(time.monotonic() - t0, 1))))
