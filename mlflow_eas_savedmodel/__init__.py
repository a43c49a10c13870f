"""mlflow-eas-savedmodel: an MLflow flavor for TensorFlow models served on PAI-EAS.

``save_model``/``log_model`` turn Keras models, TF1 sessions, checkpoints and SavedModel folders
into a SavedModel that EAS's TensorFlow processors (TF 1.12 to 2.7) load; ``load_model`` gives a
fast handle on CPU or GPU, and ``mlflow.pyfunc.load_model`` predicts with the SignatureDef picked
per request. Importing this package does not import TensorFlow.
"""

from mlflow_eas_savedmodel.flavor import (
    FLAVOR_NAME,
    get_default_conda_env,
    get_default_pip_requirements,
    load_model,
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
