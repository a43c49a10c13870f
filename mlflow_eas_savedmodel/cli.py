"""The ``mlflow-eas-savedmodel`` command line, a click group like MLflow's own CLI.

Each concern keeps its commands in its own module (a ``commands`` list of click commands):
:mod:`.registry` (``promote``, ``tag``), :mod:`.eas.commands` (``inspect``, ``export``,
``warmup``, ``eas-config``, ``serve-eas``, ``check-runtime``), :mod:`.serve` (``serve``) and
:mod:`.runtimes.commands` (``prepare-runtimes``); this module only assembles them.
"""

import click

from mlflow_eas_savedmodel import registry, serve
from mlflow_eas_savedmodel.bundle import PACKAGE_NAME
from mlflow_eas_savedmodel.cli_errors import UserErrorGroup
from mlflow_eas_savedmodel.eas import commands as eas_commands
from mlflow_eas_savedmodel.runtimes import commands as runtime_commands


@click.group(cls=UserErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=PACKAGE_NAME, prog_name=PACKAGE_NAME, message="%(prog)s %(version)s")
def cli():
    """Export, check, inspect and promote TensorFlow models for PAI-EAS."""


for _command in (*registry.commands, *eas_commands.commands, *serve.commands, *runtime_commands.commands):
    cli.add_command(_command)
