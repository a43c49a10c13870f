"""EAS facts where MLflow users search: tags on registered model versions and logged models.

Every registered version of a model this flavor saved carries, however it was registered
(``log_model(..., registered_model_name=...)``, ``mlflow.register_model``, the UI): set at
registration by ``log_model``, else on first use by any of this package's commands on a
``models:/`` URI (:func:`ensure_version_tags`: ``inspect``, ``export``, ``warmup``,
``eas-config``, ``check-runtime``, ``promote``, the deployment target), else by
``mlflow-eas-savedmodel tag NAME [VERSION]`` (:func:`tag_versions`):

* ``eas.processors``: the EAS processor codes its MLmodel claims, comma-separated
  (``tensorflow_cpu_1.12,...,tensorflow_gpu_2.7``), so the registry can be searched:
  ``client.search_model_versions("tags.`eas.processors` LIKE '%tensorflow_cpu_1.15%'")``;
* ``eas.tf_version``: the TensorFlow version that exported the SavedModel (MLmodel's
  ``tensorflow_version``).

``check-runtime`` on a ``models:/`` URI records its verdict per processor checked:
``eas.check.<processor code>`` = ``passed: max abs diff ...`` or ``failed: <reason> ...``. The key
is exactly ``eas.check.`` + the processor code and a passing value starts with ``passed``:
``promote --require-check`` (and other tools) rely on that convention. Which processors are
recorded: the one asked for (``--processor``), else the CPU processor codes of every runtime
checked, since the check runs the official CPU wheel of each TensorFlow version.

The logged model (MLflow 3's ``LoggedModel``, what ``log_model`` returns as ``model_id``) carries
``eas.processors``, ``eas.tf_version`` and ``eas.verification`` (what the post-save
verification ran and found, one line), so ``mlflow.search_logged_models(filter_string=
"tags.`eas.processors` LIKE '%tensorflow_cpu_1.15%'")`` finds it.
"""

import logging

import dataclasses

from mlflow_eas_savedmodel.errors import invalid_parameter_value

PROCESSORS_TAG = "eas.processors"
TF_VERSION_TAG = "eas.tf_version"
VERIFICATION_TAG = "eas.verification"
CHECK_TAG_PREFIX = "eas.check."
PASSED = "passed"
FAILED = "failed"
_MAX_VALUE_CHARS = 500
_logger = logging.getLogger(__name__)


def check_tag(processor):
    """The tag key of a runtime check: ``eas.check.<processor code>``."""
    return CHECK_TAG_PREFIX + processor


def check_passed(value):
    """Whether a runtime check's tag value (``None`` when not set) records a pass."""
    return str(value or "").startswith(PASSED)


@dataclasses.dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version, the target of the tags."""

    name: str
    version: str

    @property
    def uri(self):
        return f"models:/{self.name}/{self.version}"


def registered_version(model_uri, client=None):
    """The :class:`RegisteredVersion` a ``models:/`` URI names (alias resolved now), else ``None``."""
    if not str(model_uri).startswith("models:/"):
        return None
    from mlflow import MlflowClient
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    resolved = get_model_name_and_version(client or MlflowClient(), str(model_uri))
    if len(resolved) != 2:  # models:/<logged model id>: not a registered version
        return None
    return RegisteredVersion(resolved[0], str(resolved[1]))


def tag_registered_version(client, name, version, flavor_conf):
    """Sets ``eas.processors`` and ``eas.tf_version`` on a version from its
    :class:`~mlflow_eas_savedmodel.flavor_conf.FlavorConf`, and the ``eas.check.<processor>``
    tags of a ``verify="runtimes"`` save."""
    from mlflow_eas_savedmodel.verify_runtimes import check_tags  # save_model(verify="runtimes")

    for key, value in {**version_tags(flavor_conf), **check_tags(flavor_conf)}.items():
        client.set_model_version_tag(name, str(version), key, value)


def version_tags(flavor_conf):
    """``{eas.processors: ..., eas.tf_version: ...}`` of a :class:`FlavorConf`."""
    return {
        PROCESSORS_TAG: ",".join(flavor_conf.eas_processors),
        TF_VERSION_TAG: str(flavor_conf.tensorflow_version or ""),
    }


def logged_model_tags(flavor_conf):
    """The tags of a logged model: :func:`version_tags` plus ``eas.verification``."""
    return {**version_tags(flavor_conf), VERIFICATION_TAG: verification_value(flavor_conf.verification)}


def verification_value(verification):
    """One line of what the post-save verification ran (MLmodel's ``verification``).

    ``passed: ran every SignatureDef in TF X, matches the source (max abs diff D)``, or what
    ran instead (``static checks only: ...``, ``skipped (verify=False)``).
    """
    verification = verification or {}
    static, run = verification.get("static"), verification.get("run")
    if static is None:
        return "not recorded (saved by an older version of mlflow_eas_savedmodel)"
    if static != "ok":
        return str(static)[:_MAX_VALUE_CHARS]
    if not isinstance(run, dict):
        return f"static checks only: run {run}"[:_MAX_VALUE_CHARS]
    results = run.get("signatures", {})
    compared = [r for r in results.values() if "max_abs_diff" in r]
    where = f"TF {run.get('tensorflow')}"
    if results and len(compared) == len(results):
        worst = max(r["max_abs_diff"] for r in compared)
        value = f"passed: {len(results)} SignatureDef(s) ran in {where}, matching the source (max abs diff {worst:.3g})"
    else:
        listed = "; ".join(f"{name}: {r.get('result')}" for name, r in sorted(results.items()))
        value = f"ran in {where}: {listed}"
    return value[:_MAX_VALUE_CHARS]


def ensure_version_tags(model_uri, flavor_conf, client=None):
    """Tags the registered version ``model_uri`` names, if its ``eas.*`` tags are missing.

    What this package's commands call once they have read a ``models:/`` URI's flavor, so a
    version registered without the flavor (``mlflow.register_model``, the UI) gets its tags on
    first use. Anything else (a path, ``runs:/``) is left alone. A registry that refuses the
    write (read-only access) only logs a warning: the command itself needs no tags.

    Returns:
        The tags set (``{}`` when there was nothing to do).
    """
    if not str(model_uri).startswith("models:/"):
        return {}
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    try:
        target = registered_version(model_uri, client)
        if target is None:
            return {}
        current = client.get_model_version(target.name, target.version).tags or {}
        wanted = version_tags(flavor_conf)
        missing = {k: v for k, v in wanted.items() if current.get(k) != v}
        for key, value in missing.items():
            client.set_model_version_tag(target.name, target.version, key, value)
        return missing
    except MlflowException as e:
        _logger.warning("Could not set the eas.* tags on %s: %s", model_uri, e.message)
        return {}


def tag_versions(name, version=None, client=None):
    """Sets ``eas.processors``/``eas.tf_version`` on one version of ``name``, or on all of them.

    Versions this flavor did not save are skipped (returned with ``None``).

    Returns:
        ``{version: {tag: value} | None}``.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mlflow_eas_savedmodel.registry import version_conf

    client = client or MlflowClient()
    if version is None:
        versions = sorted((v.version for v in client.search_model_versions(f"name = '{_quoted(name)}'")), key=int)
        if not versions:
            raise invalid_parameter_value(
                f"Registered model {name!r} has no versions. Register one first "
                "(log_model(..., registered_model_name=...) or mlflow.register_model)."
            )
    else:
        versions = [str(version)]
    done = {}
    for v in versions:
        if version is None:
            try:
                conf = version_conf(client, name, v)
            except MlflowException:  # another flavor's version: not ours to tag
                done[v] = None
                continue
        else:
            conf = version_conf(client, name, v)
        tags = version_tags(conf)
        for key, value in tags.items():
            client.set_model_version_tag(name, v, key, value)
        done[v] = tags
    return done


def _quoted(name):
    return name.replace("'", "\\'")


def check_value(runtime_result):
    """``passed: ...`` or ``failed: <reason> ...`` for one runtime of a check-runtime report."""
    diffs = [
        d for s in runtime_result.signatures for d in (s.max_abs_diff, s.c_api_max_abs_diff) if d is not None
    ]
    worst = f"max abs diff {max(diffs):.3g}" if diffs else "no outputs compared"
    where = f"TF {runtime_result.tensorflow or runtime_result.tf_version} wheel, C++ and Python loaders"
    if runtime_result.ok:
        value = f"{PASSED}: {worst} ({where}, {len(runtime_result.signatures)} SignatureDefs)"
    else:
        value = f"{FAILED}: {_reason(runtime_result)} ({worst}; {where})"
    return value[:_MAX_VALUE_CHARS]


def _reason(r):
    if r.error:
        return _first_line(r.error)
    if not r.c_api_load_ok:
        return "C++ loader: " + _first_line(r.c_api_error)
    if not r.python_load_ok:
        return "Python loader: " + _first_line(r.python_error)
    for s in r.signatures:
        if s.problems:
            return f"signature {s.name!r}: {s.problems[0]}"
    return "unknown"


def _first_line(text):
    text = (text or "").strip()
    return text.splitlines()[0][:300] if text else "unknown error"


def record_check(target, report, processor=None, client=None):
    """Records ``eas.check.<processor>`` on ``target`` for each runtime of ``report``.

    Args:
        target: a :class:`RegisteredVersion` (``None``: nothing to record, e.g. a local path).
        report: the :class:`~mlflow_eas_savedmodel.eas.runtime_check.RuntimeCheckReport`.
        processor: the processor asked for, if one was.

    Returns:
        ``{tag key: value}`` as set.
    """
    if target is None:
        return {}
    from mlflow import MlflowClient

    client = client or MlflowClient()
    recorded = {}
    for runtime in report.runtimes:
        codes = [processor] if processor else [p for p in runtime.processors if p.startswith("tensorflow_cpu_")]
        for code in codes:
            recorded[check_tag(code)] = check_value(runtime)
    for key, value in recorded.items():
        client.set_model_version_tag(target.name, target.version, key, value)
    return recorded


def require_passing_checks(client, name, version, processors):
    """Raises unless ``version`` has a ``passed`` ``eas.check.<p>`` tag for every processor."""
    if not processors:
        return
    from mlflow_eas_savedmodel.runtimes import processor_version

    for p in processors:
        processor_version(p)  # an unknown code fails naming the known ones
    tags = client.get_model_version(name, str(version)).tags or {}
    missing = [(p, tags.get(check_tag(p))) for p in processors if not check_passed(tags.get(check_tag(p)))]
    if missing:
        lines = "\n".join(
            f"  - {check_tag(p)}: {value if value is not None else 'not set'}" for p, value in missing
        )
        commands = "\n".join(
            f"  mlflow-eas-savedmodel check-runtime -m models:/{name}/{version} --processor {p}"
            for p, _ in missing
        )
        raise invalid_parameter_value(
            f"Refusing to promote version {version} of {name!r}: it has no passing runtime check "
            f"for {[p for p, _ in missing]}:\n{lines}\nRun the check, which records the result on "
            f"the version, then promote again:\n{commands}"
        )
