"""The ``mlflow-eas-savedmodel`` command line, a click group like MLflow's own CLI.

Each concern keeps its commands in its own module (a ``commands`` list of click commands);
this module only assembles them.
"""

import importlib

import click

from mlflow_eas_savedmodel.bundle import PACKAGE_NAME
from mlflow_eas_savedmodel.cli_errors import UserErrorGroup

_COMMAND_MODULES = (
    "mlflow_eas_savedmodel.registry",
    "mlflow_eas_savedmodel.eas.commands",
    "mlflow_eas_savedmodel.serve",
)


@click.group(cls=UserErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=PACKAGE_NAME, prog_name=PACKAGE_NAME, message="%(prog)s %(version)s")
def cli():
    """Export, check, inspect and promote TensorFlow models for PAI-EAS."""


for _module_name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_module_name)
    except ModuleNotFoundError as _e:  # a concern not built yet
        if _e.name != _module_name:
            raise
        continue
    for _command in getattr(_module, "commands", ()):
        cli.add_command(_command)
