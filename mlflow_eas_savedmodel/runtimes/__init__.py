"""EAS's TensorFlow runtimes: which processors exist, what their op registries accept, and
running an artifact in their official wheels.

One module per concern:

* :mod:`.table`: the one table of runtimes (a row per TF version: processors, wheel, measured
  facts) that the processor codes, environments, semantic rules and messages are derived from.
* :mod:`.processors`: the EAS processor codes and the runtime version each runs
  (``RUNTIME_VERSIONS``, ``PROCESSORS``, ``processor_version``).
* :mod:`.static_check`: a graph against each runtime's op registry (``registries/tf-X.json.gz``,
  written by ``scripts/dump_op_registry.py``): ``check_graph``, ``check_all``, ``summarize``.
* :mod:`.semantic`: named rules for kernels a runtime registers but refuses on CPU.
* :mod:`.venvs`: cached virtual environments built from an old CPython (interpreter discovery,
  marker, lock, progress and timeout), shared with the official client
  (:mod:`mlflow_eas_savedmodel.eas.official_client`).
* :mod:`.environments`: which official wheel and CPython each runtime needs; ``ensure_runtime``.
* :mod:`.runtime_process`: ``run_in_runtime`` loads and runs a SavedModel in a runtime's
  interpreter, in a subprocess running ``_runner.py`` (old-Python syntax, no import of this
  package), which shares ``_npz_format.py`` (arrays across the process boundary) and
  ``_c_api.py`` (the wheel's C API library, also used by ``scripts/dump_op_registry.py``).

This package re-exports the processor codes and the static check that
:mod:`mlflow_eas_savedmodel.flavor` uses at save.
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
