"""EAS facts on registered model versions, as MLflow model version tags.

A version registered through the flavor (``log_model(..., registered_model_name=...)``, or
promoted with :func:`mlflow_eas_savedmodel.registry.promote`) carries:

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
"""

import dataclasses

from mlflow_eas_savedmodel.errors import invalid_parameter_value

PROCESSORS_TAG = "eas.processors"
TF_VERSION_TAG = "eas.tf_version"
CHECK_TAG_PREFIX = "eas.check."
PASSED = "passed"
FAILED = "failed"
_MAX_VALUE_CHARS = 500


def check_tag(processor):
    """The tag key of a runtime check: ``eas.check.<processor code>``."""
    return CHECK_TAG_PREFIX + processor


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
    client.set_model_version_tag(name, str(version), PROCESSORS_TAG, ",".join(flavor_conf.eas_processors))
    client.set_model_version_tag(name, str(version), TF_VERSION_TAG, str(flavor_conf.tensorflow_version or ""))
    from mlflow_eas_savedmodel.verify_runtimes import check_tags  # save_model(verify="runtimes")

    for key, value in check_tags(flavor_conf).items():
        client.set_model_version_tag(name, str(version), key, value)


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
    missing = [(p, tags.get(check_tag(p))) for p in processors if not str(tags.get(check_tag(p), "")).startswith(PASSED)]
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
