"""``check_runtime``: the artifact run in the official TensorFlow wheel of an EAS processor.

For each runtime asked for, the SavedModel is loaded in a cached environment with the
official wheel of that version (:func:`~mlflow_eas_savedmodel.runtimes.conformance.run_in_runtime`)
by the C++ loader through the C API (``TF_LoadSessionFromSavedModel``, what EAS's processors
call) and by the Python TF1 loader; every SignatureDef runs on its inputs (see :mod:`.inputs`)
both ways and is compared with TensorFlow 2.21's outputs from this package's own handle:
``allclose(rtol=1e-5, atol=1e-6)`` for floats, exact equality for integers, booleans and
strings, same shapes always. A runtime passes when both loaders load the model and every
SignatureDef matches both ways.

The report also says whether the model's metadata claims the processor: a claim that a runtime
check contradicts is a bug of the conversion, and the report says so.
"""

import dataclasses
import os
import tempfile
import time
from typing import List, Optional

import numpy as np

from mlflow_eas_savedmodel.eas.artifact import download_model, saved_model_dir
from mlflow_eas_savedmodel.eas.inputs import resolve_inputs
from mlflow_eas_savedmodel.errors import invalid
from mlflow_eas_savedmodel.runtimes import PROCESSORS, RUNTIME_VERSIONS, processor_version

RTOL = 1e-5
ATOL = 1e-6
# The one default of the API and the CLI: the most used EAS TensorFlow processor. Checking
# every claimed processor builds up to six environments (minutes each on a new machine); ask
# for it with processor=None (--claimed) or all=True (--all).
DEFAULT_PROCESSOR = "tensorflow_cpu_1.15"
# Per runtime, building its environment on first use included (measured: 1-4 min per wheel).
DEFAULT_TIMEOUT_S = 900.0


@dataclasses.dataclass
class SignatureResult:
    """One SignatureDef in one runtime, against TensorFlow 2.21."""

    name: str
    inputs_from: str  # "input example", "given inputs" or "synthesised"
    ok: bool
    max_abs_diff: Optional[float] = None  # Python loader vs TF 2.21 (floats and ints)
    c_api_max_abs_diff: Optional[float] = None  # C API (C++ loader) vs TF 2.21
    problems: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RuntimeResult:
    """One runtime (TF version) and the processors that run it."""

    tf_version: str
    processors: List[str]
    claimed: bool  # the model's metadata lists one of these processors
    python: str = ""
    python_version: str = ""
    wheel: str = ""
    tensorflow: str = ""
    c_api_load_ok: bool = False
    c_api_error: Optional[str] = None
    python_load_ok: bool = False
    python_error: Optional[str] = None
    signatures: List[SignatureResult] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    error: Optional[str] = None  # the environment could not be built or the runner timed out

    @property
    def ok(self):
        return (
            self.error is None
            and self.c_api_load_ok
            and self.python_load_ok
            and all(s.ok for s in self.signatures)
        )


@dataclasses.dataclass
class RuntimeCheckReport:
    """What :func:`check_runtime` found; ``ok`` is the verdict, ``format()`` the text."""

    model_uri: str
    reference_tensorflow: str
    runtimes: List[RuntimeResult]
    reference_error: Optional[str] = None
    recorded_on: Optional[str] = None  # models:/NAME/VERSION whose eas.check.* tags were set
    recorded_tags: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self):
        return self.reference_error is None and all(r.ok for r in self.runtimes)

    def to_dict(self):
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        for runtime, result in zip(data["runtimes"], self.runtimes):
            runtime["ok"] = result.ok
        return data

    def format(self):
        lines = [f"Model: {self.model_uri}", f"Reference: TensorFlow {self.reference_tensorflow} (this process)"]
        if self.reference_error:
            lines.append(f"  reference FAILED: {self.reference_error}")
        for r in self.runtimes:
            lines.append("")
            lines.append(
                f"TF {r.tf_version} ({', '.join(r.processors)}): {'PASS' if r.ok else 'FAIL'}"
                + ("" if r.claimed else "  [not claimed by the model's metadata]")
            )
            if r.error:
                lines.append(f"  error: {r.error}")
                continue
            lines.append(f"  interpreter: {r.python} (Python {r.python_version})")
            lines.append(f"  wheel: {r.wheel} (tf.__version__ {r.tensorflow})")
            lines.append("  C++ loader (C API TF_LoadSessionFromSavedModel): "
                         + ("ok" if r.c_api_load_ok else f"FAILED: {_first_line(r.c_api_error)}"))
            lines.append("  Python TF1 loader: "
                         + ("ok" if r.python_load_ok else f"FAILED: {_first_line(r.python_error)}"))
            for s in r.signatures:
                diffs = f"max abs diff {_num(s.max_abs_diff)} (Python), {_num(s.c_api_max_abs_diff)} (C API)"
                lines.append(f"  signature {s.name!r} on {s.inputs_from}: {'ok' if s.ok else 'FAIL'}; {diffs}")
                lines.extend(f"    - {p}" for p in s.problems)
            if r.claimed and not r.ok:
                lines.append("  The metadata claims this processor but the runtime refuses the model: "
                             "a conversion bug; do not deploy there.")
        lines.append("")
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)


def _first_line(text):
    text = (text or "").strip()
    return text.splitlines()[0][:500] if text else "unknown error"


def _num(value):
    return "n/a" if value is None else f"{value:.3g}"


def _runtimes_to_check(processor, all_runtimes, claimed):
    if all_runtimes:
        versions = list(RUNTIME_VERSIONS)
    elif processor is not None:
        versions = [processor_version(processor)]
    else:
        versions = sorted({PROCESSORS[p] for p in claimed}, key=RUNTIME_VERSIONS.index)
        if not versions:
            raise invalid(
                "The model's metadata claims no EAS processor; pass processor='tensorflow_cpu_1.15' "
                "(or --processor) to check one anyway, or all=True (--all)."
            )
    return versions


def _as_list(array):
    return [v if isinstance(v, bytes) else str(v).encode() for v in np.asarray(array, dtype=object).reshape(-1).tolist()]


def compare(expected, actual, where):
    """``(max abs diff or None, [problems])`` of one output against TensorFlow 2.21's."""
    expected = np.asarray(expected)
    if actual is None:
        return None, [f"{where}: missing from the runtime's outputs"]
    actual = np.asarray(actual)
    if expected.shape != actual.shape:
        return None, [f"{where}: shape {actual.shape}, TF 2.21 gives {expected.shape}"]
    if expected.dtype.kind in "OSU" or actual.dtype.kind in "OSU":
        if _as_list(expected) != _as_list(actual):
            return None, [f"{where}: strings differ from TF 2.21's"]
        return 0.0, []
    if expected.size == 0:
        return 0.0, []
    diff = float(np.max(np.abs(expected.astype(np.float64) - actual.astype(np.float64))))
    if expected.dtype.kind in "fc":
        ok = np.allclose(actual, expected, rtol=RTOL, atol=ATOL, equal_nan=True)
        return diff, [] if ok else [f"{where}: max abs diff {diff:.3g} exceeds rtol={RTOL}, atol={ATOL}"]
    return diff, [] if np.array_equal(expected, actual) else [f"{where}: values differ (exact match needed)"]


def check_runtime(model_uri, processor=DEFAULT_PROCESSOR, all=False, inputs=None, timeout=DEFAULT_TIMEOUT_S):  # noqa: A002
    """Runs ``model_uri`` in the official TensorFlow wheel(s) of EAS processors and compares.

    Args:
        model_uri: a model saved by this flavor.
        processor: the EAS processor whose runtime to use, e.g. ``"tensorflow_cpu_1.15"``;
            ``None`` checks every runtime the model's metadata claims.
        all: check all six runtimes (1.12, 1.14, 1.15, 2.3, 2.4, 2.7) instead.
        inputs: ``{key: array}`` (or one array) to feed instead of the saved input example;
            SignatureDefs they do not cover get synthesised inputs (batch 2).
        timeout: seconds one runtime may take, building its environment on first use
            included (the build alone takes minutes on a new machine).

    Returns:
        A :class:`RuntimeCheckReport`; ``report.ok`` is the verdict. For a ``models:/`` URI
        the verdict per processor is also recorded on the version as ``eas.check.<processor>``
        tags (``report.recorded_tags``, see :mod:`mlflow_eas_savedmodel.registry_tags`).

    Raises:
        MlflowException: an unknown processor, or no interpreter for a runtime's wheel (the
            message has the install command).

    Example:
        >>> report = mlflow_eas_savedmodel.check_runtime("models:/mnist/1", "tensorflow_cpu_1.15")
        >>> print(report.format()); assert report.ok
    """
    from mlflow.exceptions import MlflowException

    from mlflow_eas_savedmodel._tensorflow import import_tensorflow
    from mlflow_eas_savedmodel.flavor import load_model
    from mlflow_eas_savedmodel.runtimes.conformance import run_in_runtime
    from mlflow_eas_savedmodel.runtimes.environments import ensure_runtime

    from mlflow_eas_savedmodel import registry_tags

    # A models:/ URI's alias is resolved once: the tags go on the version that was checked.
    target = registry_tags.registered_version(model_uri)
    with tempfile.TemporaryDirectory(prefix="eas-check-") as tmp:
        local, mlmodel, conf = download_model(
            target.uri if target else model_uri, dst_path=_empty_dir(tmp, "model")
        )
        claimed = list(conf.get("eas_processors", []))
        versions = _runtimes_to_check(processor, all, claimed)
        signature_defs = conf["signature_defs"]
        feeds, origins = resolve_inputs(signature_defs, mlmodel, local, inputs=inputs)
        # Environments first: a missing interpreter fails before TensorFlow is even loaded.
        # `timeout` covers a runtime's build and its run: the run gets what the build left.
        envs, run_timeouts = {}, {}
        for version in versions:
            started = time.monotonic()
            envs[version] = ensure_runtime(version, timeout=timeout)
            run_timeouts[version] = max(1.0, timeout - (time.monotonic() - started))

        tf = import_tensorflow()
        reference, reference_error = {}, None
        try:
            handle = load_model(local, device="cpu")
            try:
                reference = {name: handle.predict(f, signature_name=name) for name, f in feeds.items()}
            finally:
                handle.close()
        except Exception as e:  # noqa: BLE001 - reported, the runtimes still run
            reference_error = f"{type(e).__name__}: {e}"

        results = []
        for version in versions:
            processors = [p for p, v in PROCESSORS.items() if v == version]
            result = RuntimeResult(version, processors, claimed=any(p in claimed for p in processors))
            env = envs[version]
            result.python, result.python_version, result.wheel = env.python, env.interpreter_version, env.wheel
            try:
                run = run_in_runtime(saved_model_dir(local, conf), version, feeds, timeout=run_timeouts[version])
            except MlflowException as e:
                result.error = e.message
                results.append(result)
                continue
            _fill(result, run, signature_defs, reference, origins, reference_error)
            results.append(result)
    report = RuntimeCheckReport(model_uri, tf.__version__, results, reference_error)
    report.recorded_tags = registry_tags.record_check(target, report, processor=None if all else processor)
    report.recorded_on = target.uri if target else None
    return report


def _fill(result, run, signature_defs, reference, origins, reference_error):
    result.python, result.python_version, result.wheel = run.python, run.python_version, run.wheel
    result.tensorflow, result.seconds = run.tensorflow, run.seconds
    result.c_api_load_ok, result.c_api_error = run.c_api_load_ok, run.c_api_error
    result.python_load_ok, result.python_error = run.python_load_ok, run.python_error
    for name in signature_defs:
        sig = SignatureResult(name, origins[name], ok=True)
        for label, outputs, errors, loaded in (
            ("Python loader", run.outputs, run.python_run_errors, run.python_load_ok),
            ("C API", run.c_api_outputs, run.c_api_run_errors, run.c_api_load_ok),
        ):
            if not loaded:
                sig.problems.append(f"{label}: the model did not load")
                continue
            if name in errors:
                sig.problems.append(f"{label}: run failed: {_first_line(errors[name])}")
                continue
            if reference_error is not None:
                sig.problems.append(f"{label}: no TF 2.21 reference ({reference_error})")
                continue
            worst = 0.0
            for key, expected in reference[name].items():
                diff, problems = compare(expected, outputs.get(name, {}).get(key), f"{label} output {key!r}")
                sig.problems.extend(problems)
                worst = max(worst, diff) if diff is not None else worst
            if label == "C API":
                sig.c_api_max_abs_diff = worst
            else:
                sig.max_abs_diff = worst
        sig.ok = not sig.problems
        result.signatures.append(sig)




def _empty_dir(parent, name):
    path = os.path.join(parent, name)
    os.makedirs(path)
    return path
