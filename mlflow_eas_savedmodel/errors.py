"""The one exception users see: ``MlflowException`` with ``INVALID_PARAMETER_VALUE``.

Every message names the problem and the fix, so that it can be acted on without the docs.
"""

from mlflow.exceptions import MlflowException


def invalid_parameter_value(message):
    """An ``MlflowException`` for a problem the caller caused (raise it).

    MLflow's own ``MlflowException.invalid_parameter_value``, under the name every module imports.
    """
    return MlflowException.invalid_parameter_value(message)
