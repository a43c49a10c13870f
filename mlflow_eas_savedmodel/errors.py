"""The one exception users see: ``MlflowException`` with ``INVALID_PARAMETER_VALUE``.

Every message names the problem and the fix, so that it can be acted on without the docs.
"""

from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException


def invalid(message):
    """An ``MlflowException`` for a problem the caller caused (raise it)."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)
