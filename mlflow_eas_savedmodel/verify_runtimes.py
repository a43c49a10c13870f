"""``save_model(..., verify="runtimes")``: the saved model run in every claimed runtime, at save.

The static and TF 2.21 checks (:mod:`.verify`) show that the artifact answers like the source
in TF 2.21; the claim in ``eas_processors`` is about old runtimes. With ``verify="runtimes"``
(or ``$MLFLOW_EAS_SAVEDMODEL_SAVE_VERIFY=runtimes``, which turns the default ``verify=True``
into it, for a team that wants it on every save) the SavedModel, still in the save's temporary
folder, is run in the official wheel of every TensorFlow version that ``eas_processors``
claims, with the machinery of ``check-runtime`` (:mod:`.eas.runtime_check`): the C++ loader
through the C API and the Python TF1 loader, every SignatureDef on the input example (or
synthesised inputs), compared with TF 2.21's answers of the same artifact. Then:

* a runtime that passes stays claimed; MLmodel's ``verification["runtimes"]`` records, per
  version, the ``eas.check`` value (``passed: max abs diff ...``), the CPU processor codes and
  the seconds it took;
* a runtime that refuses, fails or differs is removed from ``eas_processors`` and
  ``eas_incompatibilities[version]`` gets the runtime's own error (``runtime check: ...``);
* a save with ``eas_processor=`` whose processor fails, or whose claims all fail, raises
  ``MlflowException`` naming each runtime's error, and leaves nothing;
* ``log_model(..., registered_model_name=...)`` writes the ``eas.check.<processor>`` tags of
  these results on the new version (:func:`.registry_tags.tag_registered_version`), so
  ``promote --require-check`` passes without a separate ``check-runtime``.

Cost: one runtime process per claimed TensorFlow version, a few seconds each with the cached
environments (``bench/verify_runtimes.py``); a missing environment is built on first use
(minutes).
"""

import dataclasses
import os
import time

from mlflow_eas_savedmodel.errors import invalid_parameter_value

MODE = "runtimes"
SAVE_VERIFY_ENV = "MLFLOW_EAS_SAVEDMODEL_SAVE_VERIFY"
RUNTIMES_KEY = "runtimes"
INCOMPATIBILITY_PREFIX = "runtime check: "


def effective_mode(verify):
    """``verify`` as the save uses it: the default ``True`` becomes ``"runtimes"`` when
    ``$MLFLOW_EAS_SAVEDMODEL_SAVE_VERIFY=runtimes``; any other value of the variable is refused."""
    value = os.environ.get(SAVE_VERIFY_ENV, "").strip()
    if not value:
        return verify
    if value != MODE:
        raise invalid_parameter_value(
            f"${SAVE_VERIFY_ENV}={value!r} is not valid. Set it to 'runtimes' (run every saved "
            "model in the claimed EAS runtimes) or unset it."
        )
    return MODE if verify is True else verify


def verify_in_runtimes(exported, export_dir, verify, example=None, processor=None, timeout=None):
    """Runs ``export_dir`` in every claimed runtime when ``verify`` is ``"runtimes"``.

    Args:
        exported: the :class:`~.flavor_conf.FlavorConf` :func:`~.export.export` returned.
        export_dir: the SavedModel folder (in the save's temporary folder).
        verify: the save's ``verify=`` mode (after :func:`effective_mode`).
        example: the input example as numpy, or ``None`` (inputs are synthesised).
        processor: the :class:`~.export.Processor` of ``eas_processor=``, or ``None``.
        timeout: seconds per runtime (default: ``check-runtime``'s, environment build included).

    Returns:
        ``exported`` with failing claims removed and ``verification["runtimes"]`` filled (the
        same object when ``verify`` is not ``"runtimes"``).
    """
    if effective_mode(verify) != MODE:
        return exported
    from mlflow_eas_savedmodel.eas import runtime_check

    timeout = timeout or runtime_check.DEFAULT_TIMEOUT_S
    versions = _versions_to_run(exported, processor)
    feeds, origins, reference = _reference_answers(exported, export_dir, example)
    results = _run_each_runtime(exported, export_dir, versions, feeds, origins, reference, processor, timeout)
    return _keep_passing_claims(exported, results)


def _versions_to_run(exported, processor):
    """The claimed TensorFlow versions, ``eas_processor=``'s first: the one that must pass."""
    from mlflow_eas_savedmodel.runtimes import PROCESSORS, RUNTIME_VERSIONS

    versions = sorted({PROCESSORS[p] for p in exported.eas_processors}, key=RUNTIME_VERSIONS.index)
    if processor is not None and processor.version in versions:  # the one that must pass first
        versions.remove(processor.version)
        versions.insert(0, processor.version)
    return versions


def _reference_answers(exported, export_dir, example):
    """``(feeds, {signature: input origin}, TF 2.21's ReferenceOutputs)`` of ``export_dir``."""
    from mlflow_eas_savedmodel.eas.inputs import inputs_per_signature
    from mlflow_eas_savedmodel.eas.runtime_check import ReferenceOutputs
    from mlflow_eas_savedmodel.graph.example_spec import signature_example_specs
    from mlflow_eas_savedmodel.sources.saved_model import read_saved_model
    from mlflow_eas_savedmodel.verify import run_saved_model

    meta_graph_def = read_saved_model(export_dir).meta_graphs[0]
    feeds, covered = inputs_per_signature(
        exported.signature_defs, example, example_specs=signature_example_specs(meta_graph_def)
    )
    origins = {name: "input example" if covered[name] else "synthesised" for name in feeds}
    outputs, errors = run_saved_model(export_dir, feeds)
    return feeds, origins, ReferenceOutputs(outputs, errors, None)


def _run_each_runtime(exported, export_dir, versions, feeds, origins, reference, processor, timeout):
    """``{version: (runtime check result, seconds)}``; raises as soon as ``processor``'s fails."""
    from mlflow_eas_savedmodel import registry_tags
    from mlflow_eas_savedmodel.eas import runtime_check

    envs, run_timeouts = runtime_check.ensure_environments(versions, timeout)
    results = {}
    for version in versions:
        started = time.monotonic()
        result = runtime_check.check_one_runtime(
            version, envs[version], export_dir, feeds, run_timeouts[version], exported.eas_processors,
            exported.signature_defs, reference, origins,
            runtime_check.RTOL, runtime_check.ATOL,
        )
        results[version] = (result, time.monotonic() - started)
        if processor is not None and version == processor.version and not result.ok:
            raise invalid_parameter_value(
                f"eas_processor={processor.code!r}: the saved model does not pass in the real TF "
                f"{version} runtime ({registry_tags.check_value(result)}). Nothing was saved. "
                "Save without eas_processor= to record where it does run, or report the model."
            )
    return results


def _keep_passing_claims(exported, results):
    """``exported`` with the failed runtimes' processors dropped and ``verification`` filled."""
    from mlflow_eas_savedmodel import registry_tags
    from mlflow_eas_savedmodel.runtimes import PROCESSORS, RUNTIME_VERSIONS

    record = {
        version: {
            "check": registry_tags.check_value(result),
            "processors": [p for p in result.processors if p.startswith("tensorflow_cpu_")],
            "seconds": round(seconds, 1),
        }
        for version, (result, seconds) in sorted(results.items(), key=lambda r: RUNTIME_VERSIONS.index(r[0]))
    }
    failed = {version: record[version]["check"] for version, (result, _) in results.items() if not result.ok}
    claimed = [p for p in exported.eas_processors if PROCESSORS[p] not in failed]
    if not claimed:
        raise invalid_parameter_value(
            "verify='runtimes': the saved model passes in none of the runtimes it would claim ("
            + "; ".join(f"TF {v}: {why}" for v, why in failed.items())
            + "). Nothing was saved. Save with verify=True to keep the static claim, or report "
            "the model."
        )
    incompatibilities = dict(exported.eas_incompatibilities)
    for version, why in failed.items():
        incompatibilities[version] = [INCOMPATIBILITY_PREFIX + why]
    verification = dict(exported.verification or {})
    verification[RUNTIMES_KEY] = record
    return dataclasses.replace(
        exported, eas_processors=claimed, eas_incompatibilities=incompatibilities, verification=verification
    )


def check_tags(flavor_conf):
    """``{eas.check.<processor>: value}`` of the runtimes a ``verify="runtimes"`` save ran."""
    from mlflow_eas_savedmodel.registry_tags import check_tag

    record = (flavor_conf.verification or {}).get(RUNTIMES_KEY) or {}
    return {
        check_tag(code): entry["check"]
        for entry in record.values() if isinstance(entry, dict)
        for code in entry.get("processors", [])
    }
