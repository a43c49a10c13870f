"""``mlflow-eas-savedmodel serve``: MLflow's own ``mlflow models serve``, started so that it works.

``mlflow models serve`` starts ``uvicorn`` (and, for ``--env-manager uv|virtualenv``, ``uv`` or
``virtualenv``) by name, so ``.venv/bin/mlflow models serve`` with the venv not activated exits
127. This command runs exactly MLflow's server (``python -m mlflow models serve``, the same
scoring protocol, the same ``--env-manager`` semantics) with this interpreter's ``bin`` folder
first on ``PATH``, where those programs are installed next to it. Nothing of the serving itself
is reimplemented: the answers are MLflow's. The model gets the pre-load check of every entry
point first (:mod:`.artifact_check`), so a refused model ends in one ``Error:`` line before any
server starts (MLflow's server then loads it through pyfunc, which checks it again).

``-h`` is help here, as in every command of this CLI; the interface is ``--host`` (default
127.0.0.1: nothing is exposed to the network unless asked).
"""

import os
import sys

import click

from mlflow_eas_savedmodel.cli_options import given_store_uris, model_uri_argument, store_options

ENV_MANAGERS = ("local", "uv", "virtualenv", "conda")


def serve_command_line(model_uri, port, host="127.0.0.1", workers=None, env_manager="local", store_env=None):
    """The ``mlflow models serve`` command line and environment :func:`serve` runs.

    Returns:
        ``(argv, env)``: ``argv`` starts with this interpreter; ``env`` is ``os.environ`` with
        the interpreter's ``bin`` folder first on ``PATH``, plus ``store_env``
        (``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI``).
    """
    argv = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "-p", str(port),
        "-h", host, "--env-manager", env_manager,
    ]
    if workers is not None:
        argv += ["-w", str(workers)]
    env = {**os.environ, **(store_env or {})}
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "") if env.get("PATH") else bin_dir
    return argv, env


@click.command("serve")
@model_uri_argument()
@click.option("-p", "--port", type=int, default=5000, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; 0.0.0.0 exposes the server to the network.")
@click.option("-w", "--workers", type=int, default=None,
              help="Number of uvicorn workers (default: MLflow's).")
@click.option("--env-manager", type=click.Choice(ENV_MANAGERS), default="local", show_default=True,
              help="local: this environment; uv/virtualenv/conda: one built from the model's "
                   "requirements (see README, Install).")
@store_options
def serve_command(model_uri, port, host, workers, env_manager):
    """Serve MODEL_URI with MLflow's scoring server (`mlflow models serve`), venv activated or not.

    Example: mlflow-eas-savedmodel serve -m models:/mnist@champion -p 5001
    """
    from mlflow_eas_savedmodel.artifact_check import check_model_uri

    # Refused here with one Error: line, before MLflow's server starts (its load checks again).
    check_model_uri(model_uri)
    argv, env = serve_command_line(model_uri, port, host, workers, env_manager, given_store_uris())
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: Ctrl-C and signals from a process manager reach MLflow's server directly.
    os.execve(argv[0], argv, env)


commands = [serve_command]
