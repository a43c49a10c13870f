"""EAS's TensorFlow processor codes and the TensorFlow runtime version each one runs.

PAI-EAS names its built-in TensorFlow processors ``tensorflow_cpu_<version>`` and
``tensorflow_gpu_<version>``; the six CPU runtimes are :data:`RUNTIME_VERSIONS` (the GPU
editions exist for all of them but 2.3). Everything else in :mod:`mlflow_eas_savedmodel.runtimes`
is keyed by these versions.
"""

from mlflow_eas_savedmodel.errors import invalid_parameter_value

RUNTIME_VERSIONS = ("1.12", "1.14", "1.15", "2.3", "2.4", "2.7")
PROCESSORS = {
    **{f"tensorflow_cpu_{v}": v for v in RUNTIME_VERSIONS},
    **{f"tensorflow_gpu_{v}": v for v in ("1.12", "1.14", "1.15", "2.4", "2.7")},
}


def processor_version(processor):
    """``"tensorflow_cpu_1.15"`` -> ``"1.15"``; an unknown code is an error listing the known."""
    try:
        return PROCESSORS[processor]
    except KeyError:
        raise invalid_parameter_value(
            f"Unknown EAS processor {processor!r}. Use one of: {', '.join(PROCESSORS)}."
        ) from None
