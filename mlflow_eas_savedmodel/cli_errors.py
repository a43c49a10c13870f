"""How the command line reports a user's mistake: ``Error: <what and the fix>``, exit code 1.

An ``MlflowException`` (a bad model, URI or argument) and an ``OSError`` (a path that is a file,
a folder that cannot be written, a port in use, an unreadable file) become one message naming
the fix instead of a traceback; anything else is a bug and keeps its traceback. The group class
:class:`UserErrorGroup` applies this to every command of ``mlflow-eas-savedmodel``;
:func:`user_errors` to a command invoked on its own (tests, other click groups).
"""

import errno
import functools
import os

import click
from mlflow.exceptions import MlflowException

# A command line should fail in seconds on an unreachable tracking server, not retry for minutes
# (MLflow's defaults: 7 retries with backoff, 120 s per request). Values already set win.
NETWORK_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

_OS_ERROR_FIXES = {
    errno.EEXIST: "something is already there: pick a new path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: pick a path under a folder",
    errno.EISDIR: "it is a folder where a file is needed: pick a file path",
    errno.ENOENT: "it does not exist or cannot be created there: check the path",
    errno.EACCES: "permission denied: pick a path you may read and write",
    errno.EPERM: "not permitted: pick a path you may read and write",
    errno.EROFS: "the file system is read-only: pick a writable path",
    errno.ENOSPC: "the disk is full: free space or pick another disk",
    errno.EADDRINUSE: "the port is in use: pick another --port (0 picks a free one)",
    errno.EADDRNOTAVAIL: "this machine has no such address: check --host",
}


def _os_error_message(error):
    names = (error.filename, error.filename2)
    where = " -> ".join(repr(os.fsdecode(f)) for f in names if isinstance(f, (str, bytes, os.PathLike)))
    fix = _OS_ERROR_FIXES.get(error.errno, "check the path, its permissions and free disk space")
    return f"{error.strerror or error}{': ' + where if where else ''} ({fix})."


def _mlflow_error_message(error):
    message = error.message.strip()
    if "API request to" in message or "unsupported URI" in message:
        message += (
            " Check --tracking-uri (or $MLFLOW_TRACKING_URI) and that the MLflow server is "
            "running and reachable."
        )
    return message


def as_click_exception(error):
    """The ``click.ClickException`` for an ``MlflowException`` or ``OSError``."""
    if isinstance(error, MlflowException):
        return click.ClickException(_mlflow_error_message(error))
    return click.ClickException(_os_error_message(error))


def _set_network_defaults():
    for name, value in NETWORK_DEFAULTS.items():
        os.environ.setdefault(name, value)


def user_errors(command):
    """Decorates a click command callback so user errors end as ``Error: ...``."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _set_network_defaults()
        try:
            return command(*args, **kwargs)
        except (MlflowException, OSError) as e:
            raise as_click_exception(e) from None

    return wrapper


class UserErrorGroup(click.Group):
    """A click group whose every command reports user errors as ``Error: ...`` (exit code 1)."""

    def invoke(self, ctx):
        _set_network_defaults()
        try:
            return super().invoke(ctx)
        except (MlflowException, OSError) as e:
            raise as_click_exception(e) from None
