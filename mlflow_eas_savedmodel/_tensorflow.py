"""TensorFlow, imported lazily and quietly.

`import mlflow_eas_savedmodel` must stay cheap and TensorFlow-free, so every module that needs
TensorFlow calls :func:`import_tensorflow` inside the function that uses it.

TensorFlow's C++ runtime prints oneDNN and CPU-feature banners to the process's stderr while it
initialises, before Python's logging exists and whatever ``TF_CPP_MIN_LOG_LEVEL`` says about
absl's early messages. We silence file descriptor 2 for the duration of the first import only,
unless ``MLFLOW_EAS_SAVEDMODEL_TF_LOGS=1`` asks for TensorFlow's own logs.

:func:`quiet_tensorflow` keeps the conversion of a model (``save_model``) from printing too,
also when the user imported TensorFlow first (then the import above never ran): TensorFlow's
Python warnings (deprecations of the TF1 APIs the export must use, "Issue encountered when
serializing ...") are held back by raising the ``tensorflow`` logger's level for the call, and
its C++ log lines (grappler's "Starting new session", MLIR notices), which ``TF_CPP_MIN_LOG_LEVEL``
set after the import no longer stops, are taken off file descriptor 2 and logged at DEBUG on
``mlflow_eas_savedmodel.tensorflow`` (errors at WARNING). Whatever else reached fd 2 meanwhile is
written back to it unchanged.
"""

import contextlib
import importlib
import logging
import os
import re
import sys
import tempfile

from mlflow.exceptions import MlflowException

_LOGS_ENV = "MLFLOW_EAS_SAVEDMODEL_TF_LOGS"
_INSTALL_HINT = (
    "TensorFlow is required by mlflow-eas-savedmodel for this operation. Install it with "
    "`pip install 'mlflow-eas-savedmodel[cpu]'` (tensorflow-cpu) or "
    "`pip install 'mlflow-eas-savedmodel[gpu]'` (tensorflow[and-cuda])."
)


_tf_logger = logging.getLogger("mlflow_eas_savedmodel.tensorflow")
# absl/TF C++ log lines: "I0000 00:00:1796118705.526031   12133 devices.cc:76] ...".
_CPP_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\s\]]+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


@contextlib.contextmanager
def quiet_tensorflow():
    """Keeps TensorFlow's Python and C++ log lines out of the terminal for the ``with`` body.

    Also a decorator (``@quiet_tensorflow()``). Does nothing with ``MLFLOW_EAS_SAVEDMODEL_TF_LOGS=1``.
    """
    if os.environ.get(_LOGS_ENV) == "1":
        yield
        return
    python_logger = logging.getLogger("tensorflow")
    level = python_logger.level
    python_logger.setLevel(logging.ERROR)
    try:
        with _stderr_to_logging():
            yield
    finally:
        python_logger.setLevel(level)


@contextlib.contextmanager
def _stderr_to_logging():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to catch
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except ValueError:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            _replay(capture.read().decode("utf-8", "replace"))


def _replay(text):
    passthrough = []
    for line in text.splitlines(keepends=True):
        match = _CPP_LOG_LINE.match(line)
        if match:
            level = logging.WARNING if match.group(1) in "EF" else logging.DEBUG
            _tf_logger.log(level, "%s", line.rstrip("\n"))
        elif not line.startswith(_ABSL_PREAMBLE):
            passthrough.append(line)
    if passthrough:
        os.write(2, "".join(passthrough).encode())


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
