"""``check_runtime``: the artifact run in the official TensorFlow wheel of an EAS processor.

For each runtime asked for, the SavedModel is loaded in a cached environment with the
official wheel of that version (:func:`~mlflow_eas_savedmodel.runtimes.runtime_process.run_in_runtime`)
by the C++ loader through the C API (``TF_LoadSessionFromSavedModel``, what EAS's processors
call) and by the Python TF1 loader; every SignatureDef runs on its inputs (see :mod:`.inputs`:
the input example, the caller's inputs, given per SignatureDef or for all, else synthesised,
with valid serialized ``tf.Example``\s for inputs a parse op reads) both ways and is compared
with TensorFlow 2.21's outputs from this package's own handle, SignatureDef by SignatureDef (one
that fails in 2.21 takes only its own reference away). Floats pass within ``atol + rtol *
max|output|`` (:mod:`..comparison`; ``rtol``/``atol`` arguments, ``--rtol``/``--atol``);
integers, booleans and strings must be equal, shapes always.

Each runtime gets a verdict (:data:`VERDICTS`): it ``passed``, ``refused to load`` the model,
loaded it but ``failed to run`` a SignatureDef, ``ran, outputs differ`` beyond the tolerance,
``ran, no reference`` (TF 2.21 itself failed on that SignatureDef's inputs), or the check
itself hit an ``error`` (environment, timeout). The report also says whether the
model's metadata claims the processor: a claimed processor that refuses the model is a bug of
the conversion, and the report says so; differing outputs are reported with their size, for the
user to judge against the model's own tolerance.
"""

import dataclasses
import os
import tempfile
import time

from mlflow_eas_savedmodel.artifact_check import check_model_folder
from mlflow_eas_savedmodel.comparison import ATOL, RTOL, compare
from mlflow_eas_savedmodel.eas.mlmodel import download_model
from mlflow_eas_savedmodel.eas.inputs import resolve_inputs
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.runtimes import PROCESSORS, RUNTIME_VERSIONS, processor_version
from mlflow_eas_savedmodel.runtimes.runtime_process import RuntimeRun

__all__ = ["check_runtime", "compare", "RuntimeCheckReport", "VERDICTS"]

# The one default of the API and the CLI: the most used EAS TensorFlow processor. Checking
# every claimed processor builds up to one environment per runtime (minutes each on a new machine); ask
# for it with processor=None (--claimed) or all_runtimes=True (--all).
DEFAULT_PROCESSOR = "tensorflow_cpu_1.15"
PASSED = "passed"
REFUSED = "refused to load"
RUN_FAILED = "failed to run"
DIFFERS = "ran, outputs differ"
NOT_COMPARED = "ran, no reference"
ERROR = "error"
VERDICTS = (PASSED, REFUSED, RUN_FAILED, DIFFERS, NOT_COMPARED, ERROR)
# Per runtime, building its environment on first use included (measured: 1-4 min per wheel).
DEFAULT_TIMEOUT_S = 900.0


@dataclasses.dataclass
class SignatureResult:
    """One SignatureDef in one runtime, against TensorFlow 2.21."""

    name: str
    inputs_from: str  # "input example", "given inputs" or "synthesised"
    ok: bool
    max_abs_diff: float | None = None  # Python loader vs TF 2.21 (floats and ints)
    c_api_max_abs_diff: float | None = None  # C API (C++ loader) vs TF 2.21
    problems: list[str] = dataclasses.field(default_factory=list)
    verdict: str = PASSED  # PASSED, RUN_FAILED, DIFFERS, or REFUSED when the model did not load
    reference_error: str | None = None  # TF 2.21 could not run it: nothing to compare with


@dataclasses.dataclass
class RuntimeResult(RuntimeRun):
    """One runtime (TF version): its :class:`RuntimeRun`, the processors that run it, and the
    verdict per SignatureDef against TF 2.21."""

    processors: list[str] = dataclasses.field(default_factory=list)
    claimed: bool = False  # the model's metadata lists one of these processors
    signatures: list[SignatureResult] = dataclasses.field(default_factory=list)
    error: str | None = None  # the run itself failed (e.g. the runner timed out): nothing loaded

    def to_dict(self):
        """The report's JSON for this runtime: the raw outputs and runner report left out."""
        data = {name: getattr(self, name) for name in _JSON_FIELDS}
        data["signatures"] = [dataclasses.asdict(s) for s in self.signatures]
        return {**data, "ok": self.ok, "verdict": self.verdict}

    @property
    def verdict(self):
        """The worst of: error, refused to load, failed to run, outputs differ, passed."""
        if self.error is not None:
            return ERROR
        if not (self.c_api_load_ok and self.python_load_ok):
            return REFUSED
        verdicts = {s.verdict for s in self.signatures}
        for verdict in (RUN_FAILED, DIFFERS, NOT_COMPARED):
            if verdict in verdicts:
                return verdict
        return PASSED

    @property
    def ok(self):
        return self.verdict == PASSED and all(s.ok for s in self.signatures)


# The keys of a runtime in ``check-runtime --json``, in the order that report has always had.
_JSON_FIELDS = (
    "tf_version", "processors", "claimed", "python", "python_version", "wheel", "tensorflow",
    "c_api_load_ok", "c_api_error", "python_load_ok", "python_error", "signatures", "seconds", "error",
)


@dataclasses.dataclass
class RuntimeCheckReport:
    """What :func:`check_runtime` found; ``ok`` is the verdict, ``format()`` the text."""

    model_uri: str
    reference_tensorflow: str
    runtimes: list[RuntimeResult]
    reference_error: str | None = None
    rtol: float = RTOL
    atol: float = ATOL
    recorded_on: str | None = None  # models:/NAME/VERSION whose eas.check.* tags were set
    recorded_tags: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self):
        return self.reference_error is None and all(r.ok for r in self.runtimes)

    def to_dict(self):
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["runtimes"] = [r.to_dict() for r in self.runtimes]
        data["recorded_tags"] = dict(self.recorded_tags)
        data["ok"] = self.ok
        return data

    def format(self):
        lines = [
            f"Model: {self.model_uri}",
            f"Reference: TensorFlow {self.reference_tensorflow} (this process); floats within "
            f"atol={self.atol:g} + rtol={self.rtol:g} x max|output|",
        ]
        if self.reference_error:
            lines.append(f"  reference FAILED: {self.reference_error}")
        for r in self.runtimes:
            lines.append("")
            lines.append(
                f"TF {r.tf_version} ({', '.join(r.processors)}): {'PASS' if r.ok else 'FAIL'} ({r.verdict})"
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
                lines.append(f"  signature {s.name!r} on {s.inputs_from}: {'ok' if s.ok else s.verdict}; {diffs}")
                lines.extend(f"    - {p}" for p in s.problems)
            if r.claimed and r.verdict in (REFUSED, RUN_FAILED):
                what = ("refuses the model" if r.verdict == REFUSED
                        else "loads the model but fails to run it")
                lines.append(f"  The metadata claims this processor but the runtime {what}: "
                             "a conversion bug; do not deploy there.")
            elif r.verdict == DIFFERS:
                lines.append("  The model loaded and ran; its outputs differ from TF 2.21's by more "
                             "than the tolerance (sizes above). Judge them against your model's "
                             "needs, or pass --rtol/--atol.")
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
            raise invalid_parameter_value(
                "The model's metadata claims no EAS processor; pass processor='tensorflow_cpu_1.15' "
                "(or --processor) to check one anyway, or all_runtimes=True (--all)."
            )
    return versions


def check_runtime(
    model_uri,
    processor=DEFAULT_PROCESSOR,
    all_runtimes=False,
    inputs=None,
    timeout=DEFAULT_TIMEOUT_S,
    rtol=RTOL,
    atol=ATOL,
):
    """Runs ``model_uri`` in the official TensorFlow wheel(s) of EAS processors and compares.

    Args:
        model_uri: a model saved by this flavor.
        processor: the EAS processor whose runtime to use, e.g. ``"tensorflow_cpu_1.15"``;
            ``None`` checks every runtime the model's metadata claims.
        all_runtimes: check every runtime of
            :data:`~mlflow_eas_savedmodel.runtimes.RUNTIME_VERSIONS` instead.
        inputs: ``{key: array}`` (or one array) to feed instead of the saved input example, or
            ``{signature name: {key: array}}`` to give each SignatureDef its own; SignatureDefs
            they do not cover get synthesised inputs (batch 2).
        timeout: seconds one runtime may take, building its environment on first use
            included (the build alone takes minutes on a new machine).
        rtol: float outputs may differ from TF 2.21's by ``atol + rtol * max|output|``.
        atol: see ``rtol``.

    Returns:
        A :class:`RuntimeCheckReport`; ``report.ok`` is the verdict. For a ``models:/`` URI
        the verdict per processor is also recorded on the version as ``eas.check.<processor>``
        tags (``report.recorded_tags``, see :mod:`mlflow_eas_savedmodel.registry_tags`).

    Raises:
        MlflowException: a model the pre-load check refuses (:mod:`..artifact_check`: nothing
            of it runs anywhere), an unknown processor, or no interpreter for a runtime's wheel
            (the message has the install command).

    Example:
        >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
        >>> image = keras.Input((4,), name="image")
        >>> keras_model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
        >>> mes.save_model(keras_model, "model", input_example=np.ones((2, 4), "float32"))
        >>> report = mes.check_runtime("model", "tensorflow_cpu_1.15")
        >>> report.ok, [r.verdict for r in report.runtimes]
        (True, ['passed'])
        >>> print(report.format())
        Model: model
        ...
        TF 1.15 (tensorflow_cpu_1.15, tensorflow_gpu_1.15): PASS (passed)
        ...
        PASS
    """
    from mlflow_eas_savedmodel import registry_tags
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    _check_tolerances(rtol, atol)
    # A models:/ URI's alias is resolved once: the tags go on the version that was checked.
    target = registry_tags.registered_version(model_uri)
    with tempfile.TemporaryDirectory(prefix="eas-check-") as tmp:
        local, mlmodel, conf = download_model(
            target.uri if target else model_uri, dst_path=_empty_dir(tmp, "model")
        )
        # Refused here, before any runtime (or TF 2.21) runs a graph of it.
        check_model_folder(local, conf, where=model_uri)
        claimed = list(conf.eas_processors)
        versions = _runtimes_to_check(processor, all_runtimes, claimed)
        signature_defs = conf.signature_defs
        # Environments first: a missing interpreter fails before TensorFlow is even loaded.
        envs, run_timeouts = ensure_environments(versions, timeout)
        tf = import_tensorflow()
        export_dir = conf.saved_model_path(local)
        feeds, origins = resolve_inputs(
            signature_defs, mlmodel, local, inputs=inputs, example_specs=example_specs(export_dir)
        )
        reference = _reference_outputs(local, feeds)
        results = [
            check_one_runtime(
                version, envs[version], export_dir, feeds, run_timeouts[version], claimed,
                signature_defs, reference, origins, rtol, atol,
            )
            for version in versions
        ]
    report = RuntimeCheckReport(
        model_uri, tf.__version__, results, reference.error, rtol=rtol, atol=atol
    )
    report.recorded_tags = registry_tags.record_check(target, report, processor=None if all_runtimes else processor)
    report.recorded_on = target.uri if target else None
    return report


def _check_tolerances(rtol, atol):
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not isinstance(value, (int, float)) or value < 0:
            raise invalid_parameter_value(
                f"{name}={value!r} must be a number >= 0, e.g. {name}=1e-5."
            )


def ensure_environments(versions, timeout):
    """``({version: environment}, {version: seconds left for its run})``.

    ``timeout`` covers a runtime's build and its run: the run gets what the build left.
    """
    from mlflow_eas_savedmodel.runtimes.environments import ensure_runtime

    envs, run_timeouts = {}, {}
    for version in versions:
        started = time.monotonic()
        envs[version] = ensure_runtime(version, timeout=timeout)
        run_timeouts[version] = max(0.1, timeout - (time.monotonic() - started))
    return envs, run_timeouts


@dataclasses.dataclass
class ReferenceOutputs:
    """TensorFlow 2.21's outputs of each SignatureDef: what every runtime is compared with."""

    outputs: dict  # {signature: {key: array}}
    errors: dict  # {signature: why TF 2.21 could not run it}
    error: str | None  # the model did not load in TF 2.21: no SignatureDef has a reference


def _reference_outputs(local, feeds):
    """This package's own handle run on ``feeds``; failures are recorded, not raised."""
    from mlflow_eas_savedmodel.load import load_model

    reference = ReferenceOutputs({}, {}, None)
    try:
        handle = load_model(local, device="cpu")
    except Exception as e:  # noqa: BLE001 - reported, the runtimes still run
        reference.error = f"{type(e).__name__}: {e}"
        return reference
    try:
        for name, f in feeds.items():
            try:
                reference.outputs[name] = handle.predict(f, signature_name=name)
            except Exception as e:  # noqa: BLE001 - only this SignatureDef loses its reference
                reference.errors[name] = f"{type(e).__name__}: {_first_line(str(e))}"
    finally:
        handle.close()
    return reference


def check_one_runtime(
    version, env, export_dir, feeds, run_timeout, claimed, signature_defs, reference, origins,
    rtol, atol,
):
    """The :class:`RuntimeResult` of runtime ``version``: its run, compared SignatureDef by
    SignatureDef; a run that fails as a whole (e.g. a timeout) is the result's ``error``."""
    from mlflow.exceptions import MlflowException

    from mlflow_eas_savedmodel.runtimes.runtime_process import run_in_runtime

    processors = [p for p, v in PROCESSORS.items() if v == version]
    verdict_of = {"processors": processors, "claimed": any(p in claimed for p in processors)}
    try:
        run = run_in_runtime(export_dir, version, feeds, timeout=run_timeout)
    except MlflowException as e:
        return RuntimeResult(
            version, env.python, env.interpreter_version, env.wheel, c_api_load_ok=False,
            c_api_error=None, python_load_ok=False, python_error=None, error=e.message, **verdict_of,
        )
    result = RuntimeResult(**vars(run), **verdict_of)
    _fill(
        result, signature_defs, reference.outputs, origins, reference.error, reference.errors,
        rtol, atol,
    )
    return result


def example_specs(export_dir):
    """``{signature: {input key: tf.Example feature spec}}`` read from ``saved_model.pb``."""
    from mlflow_eas_savedmodel.graph.example_spec import signature_example_specs
    from mlflow_eas_savedmodel.sources.saved_model import read_saved_model

    saved_model = read_saved_model(export_dir)
    return signature_example_specs(saved_model.meta_graphs[0]) if saved_model.meta_graphs else {}


def _fill(result, signature_defs, reference, origins, reference_error, reference_errors, rtol, atol):
    """Compares ``result``'s outputs with TF 2.21's ``reference``: one verdict per SignatureDef."""
    for name in signature_defs:
        sig = SignatureResult(name, origins[name], ok=True)
        sig.reference_error = reference_error or reference_errors.get(name)
        verdicts = set()
        for label, outputs, errors, loaded in (
            ("Python loader", result.outputs, result.python_run_errors, result.python_load_ok),
            ("C API", result.c_api_outputs, result.c_api_run_errors, result.c_api_load_ok),
        ):
            if not loaded:
                sig.problems.append(f"{label}: the model did not load")
                verdicts.add(REFUSED)
                continue
            if name in errors:
                sig.problems.append(f"{label}: run failed: {_first_line(errors[name])}")
                verdicts.add(RUN_FAILED)
                continue
            if sig.reference_error is not None:
                sig.problems.append(f"{label}: ran; no TF 2.21 reference ({sig.reference_error})")
                verdicts.add(NOT_COMPARED)
                continue
            worst = 0.0
            for key, expected in reference[name].items():
                diff, problems = compare(
                    expected, outputs.get(name, {}).get(key), f"{label} output {key!r}", rtol=rtol, atol=atol
                )
                sig.problems.extend(problems)
                if problems:
                    verdicts.add(DIFFERS)
                worst = max(worst, diff) if diff is not None else worst
            if label == "C API":
                sig.c_api_max_abs_diff = worst
            else:
                sig.max_abs_diff = worst
        for verdict in (REFUSED, RUN_FAILED, DIFFERS, NOT_COMPARED):
            if verdict in verdicts:
                sig.verdict = verdict
                break
        sig.ok = not sig.problems
        result.signatures.append(sig)


def _empty_dir(parent, name):
    path = os.path.join(parent, name)
    os.makedirs(path)
    return path
