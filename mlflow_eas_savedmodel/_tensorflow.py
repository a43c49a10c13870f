"""TensorFlow, imported lazily and quietly.

`import mlflow_eas_savedmodel` must stay cheap and TensorFlow-free, so every module that needs
TensorFlow calls :func:`import_tensorflow` inside the function that uses it.

TensorFlow's C++ runtime prints oneDNN and CPU-feature banners to the process's stderr while it
initialises, before Python's logging exists and whatever ``TF_CPP_MIN_LOG_LEVEL`` says about
absl's early messages. We silence file descriptor 2 for the duration of the first import only,
unless ``MLFLOW_EAS_SAVEDMODEL_TF_LOGS=1`` asks for TensorFlow's own logs.
"""

import contextlib
import importlib
import logging
import os
import sys

from mlflow.exceptions import MlflowException

_LOGS_ENV = "MLFLOW_EAS_SAVEDMODEL_TF_LOGS"
_INSTALL_HINT = (
    "TensorFlow is required by mlflow-eas-savedmodel for this operation. Install it with "
    "`pip install 'mlflow-eas-savedmodel[cpu]'` (tensorflow-cpu) or "
    "`pip install 'mlflow-eas-savedmodel[gpu]'` (tensorflow[and-cuda])."
)


@contextlib.contextmanager
def _quiet_stderr():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:  # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Returns the ``tensorflow`` module, importing it once without its start-up noise."""
    if "tensorflow" in sys.modules and hasattr(sys.modules["tensorflow"], "__version__"):
        return sys.modules["tensorflow"]
    verbose = os.environ.get(_LOGS_ENV) == "1"
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with contextlib.nullcontext() if verbose else _quiet_stderr():
            tf = importlib.import_module("tensorflow")
    except ImportError as e:
        raise MlflowException(f"{_INSTALL_HINT} ({e})") from e
    if not verbose:
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
    return tf
