"""EAS's TensorFlow runtimes: which processors exist, what their op registries accept, and
running an artifact in their official wheels.

One module per concern:

* :mod:`.processors`: the EAS processor codes and the runtime version each runs
  (``RUNTIME_VERSIONS``, ``PROCESSORS``, ``processor_version``).
* :mod:`.static_check`: a graph against each runtime's op registry (``registries/tf-X.json.gz``,
  written by ``scripts/dump_op_registry.py``): ``check_graph``, ``check_all``, ``summarize``.
* :mod:`.semantic`: named rules for kernels a runtime registers but refuses on CPU.
* :mod:`.environments`: the cached environments with each runtime's official wheel.
* :mod:`.conformance`: ``run_in_runtime`` loads and runs a SavedModel in a runtime's
  interpreter, in a subprocess running ``_runner.py``.

This package re-exports the static check that :mod:`mlflow_eas_savedmodel.flavor` runs at save.
None of it imports TensorFlow at import time.
"""

from mlflow_eas_savedmodel.runtimes.processors import PROCESSORS, RUNTIME_VERSIONS, processor_version
from mlflow_eas_savedmodel.runtimes.static_check import check_all, check_graph, load_registry, summarize

__all__ = [
    "PROCESSORS",
    "RUNTIME_VERSIONS",
    "check_all",
    "check_graph",
    "load_registry",
    "processor_version",
    "summarize",
]
