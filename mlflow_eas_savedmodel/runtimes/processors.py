"""EAS's TensorFlow processor codes and the TensorFlow runtime version each one runs.

PAI-EAS names its built-in TensorFlow processors ``tensorflow_cpu_<version>`` and
``tensorflow_gpu_<version>``; the CPU runtimes are :data:`RUNTIME_VERSIONS` (the GPU editions
exist where :mod:`.table`'s row says so). Both are derived from :data:`.table.ROWS`, the one list
of runtimes; everything else in :mod:`mlflow_eas_savedmodel.runtimes` is keyed by these versions.
"""

from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.runtimes import table

RUNTIME_VERSIONS = table.runtime_versions()
PROCESSORS = table.processors()


def processor_version(processor):
    """``"tensorflow_cpu_1.15"`` -> ``"1.15"``; an unknown code is an error listing the known."""
    try:
        return PROCESSORS[processor]
    except KeyError:
        raise invalid_parameter_value(
            f"Unknown EAS processor {processor!r}. Use one of: {', '.join(PROCESSORS)}."
        ) from None
