"""mlflow-eas-savedmodel: an MLflow flavor for TensorFlow models served on PAI-EAS.

``save_model``/``log_model`` turn Keras models, TF1 sessions, checkpoints and SavedModel folders
into a SavedModel that EAS's TensorFlow processors (TF 1.12 to 2.7) load; ``load_model`` gives a
fast handle on CPU or GPU, and ``mlflow.pyfunc.load_model`` predicts with the SignatureDef picked
per request. Importing this package does not import TensorFlow.

The package is the flavor module MLflow's ``Model.log`` calls, laid out as MLflow 3's keras
flavor is: :mod:`.save` (``save_model``, ``log_model``, the environment), :mod:`.load`
(``load_model`` and the checks before a load), :mod:`.pyfunc` (``python_function``), with the
MLmodel entry owned by :mod:`.flavor_conf` and the conversion in :mod:`.sources` ->
:mod:`.graph` -> :mod:`.export`.
"""

from mlflow_eas_savedmodel.flavor_conf import FLAVOR_NAME
from mlflow_eas_savedmodel.load import load_model
from mlflow_eas_savedmodel.save import (
    get_default_conda_env,
    get_default_pip_requirements,
    log_model,
    save_model,
)
from mlflow_eas_savedmodel.eas.runtime_check import check_runtime

__all__ = [
    "check_runtime",
    "FLAVOR_NAME",
    "get_default_conda_env",
    "get_default_pip_requirements",
    "load_model",
    "log_model",
    "save_model",
]
