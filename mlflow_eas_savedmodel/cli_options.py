"""Options every ``mlflow-eas-savedmodel`` command shares, spelled the way MLflow's CLI spells them.

* The model: ``-m/--model-uri URI`` (MLflow's ``mlflow models serve -m``), or the positional
  ``MODEL_URI`` the commands took first, which keeps working. Commands with positionals after the
  model (``export MODEL_URI DEST``) take ``export -m URI DEST`` as well.
* The stores: ``--tracking-uri`` and ``--registry-uri`` on every command that reads ``models:/``
  or ``runs:/`` URIs (default: ``$MLFLOW_TRACKING_URI`` / ``$MLFLOW_REGISTRY_URI``, as in MLflow).
  They are set for this process; :func:`given_store_uris` gives them to commands that start
  other processes (``serve``).
"""

import functools

import click

_STORE_URIS = "mlflow_eas_savedmodel.store_uris"

_MODEL_URI_HELP = (
    "The model: a local folder, runs:/<run_id>/<path>, models:/<name>/<version> or "
    "models:/<name>@<alias> (or give it as the first argument)."
)


def model_uri_argument(*then):
    """Decorator: ``-m/--model-uri`` or a positional ``MODEL_URI``, then the positionals ``then``.

    The command receives ``model_uri`` and one keyword per name in ``then``, all filled.
    """

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, model_uri_option=None, **kwargs):
            given = [kwargs.pop("model_uri")] + [kwargs.pop(name) for name in then]
            given = [value for value in given if value is not None]
            if model_uri_option is not None:
                given.insert(0, model_uri_option)
            names = ["MODEL_URI (or -m/--model-uri)"] + [name.upper() for name in then]
            if len(given) > len(names):
                raise click.UsageError(
                    f"Got the model twice: -m/--model-uri {model_uri_option!r} and the argument "
                    f"{given[1]!r}. Pass it one way."
                )
            if len(given) < len(names):
                raise click.UsageError(f"Missing argument {names[len(given)]}.")
            values = dict(zip(["model_uri", *then], given))
            return command(*args, **values, **kwargs)

        for name in reversed(then):
            wrapper = click.argument(name, required=False)(wrapper)
        wrapper = click.argument("model_uri", required=False)(wrapper)
        return click.option(
            "-m", "--model-uri", "model_uri_option", metavar="URI", default=None, help=_MODEL_URI_HELP
        )(wrapper)

    return decorate


def store_options(command):
    """Decorator: ``--tracking-uri`` and ``--registry-uri``, applied before the command runs."""

    @functools.wraps(command)
    def wrapper(*args, tracking_uri=None, registry_uri=None, **kwargs):
        click.get_current_context().meta[_STORE_URIS] = (tracking_uri, registry_uri)
        apply_store_uris(tracking_uri, registry_uri)
        return command(*args, **kwargs)

    wrapper = click.option(
        "--registry-uri", default=None, metavar="URI",
        help="The model registry, if not the tracking server (default: $MLFLOW_REGISTRY_URI).",
    )(wrapper)
    return click.option(
        "--tracking-uri", default=None, metavar="URI",
        help="The MLflow tracking server or store (default: $MLFLOW_TRACKING_URI).",
    )(wrapper)


def apply_store_uris(tracking_uri, registry_uri):
    """Points MLflow in this process at the given stores; ``None`` keeps MLflow's."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)


def given_store_uris():
    """``{env var: URI}`` of the ``--tracking-uri``/``--registry-uri`` the current command got."""
    tracking_uri, registry_uri = click.get_current_context().meta.get(_STORE_URIS, (None, None))
    given = {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": registry_uri}
    return {name: uri for name, uri in given.items() if uri}
