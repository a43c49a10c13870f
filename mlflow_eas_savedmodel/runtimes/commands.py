"""``prepare-runtimes``: build the old TensorFlow runtimes ``check-runtime`` uses, ahead of time.

``check-runtime`` (and ``run-local``, the tests marked ``runtime``) run a model in the official
wheel of each EAS TensorFlow runtime, in an environment built on first use
(:func:`~mlflow_eas_savedmodel.runtimes.environments.ensure_runtime`). That needs the old CPython
the wheel was built for (the rows of :mod:`.table`: 3.6 for TF 1.12, 3.7 for 1.14/1.15, ...) and
downloads the wheel: this command pays that once, with each build's stages printed on stderr,
instead of inside the first check. A runtime already built costs a marker read.
"""

import json
import sys
import time

import click

from mlflow_eas_savedmodel.cli_errors import user_errors
from mlflow_eas_savedmodel.runtimes import table

# The command's help (click shows it) names the runtimes and CPythons of the table.
_HELP = f"""Build the TensorFlow runtimes of check-runtime now
    (default: all {table.count_word()}, {table.version_span()}).

    VERSIONS are TF versions (1.15, 2.3) or EAS processor codes (tensorflow_cpu_1.15). Each needs
    its CPython ({table.or_list(table.python_minors())}) on PATH or under pyenv. Exits 1 if one
    could not be built, after trying the others.

    Example: mlflow-eas-savedmodel prepare-runtimes 1.15 2.7
    """


@click.command("prepare-runtimes", help=_HELP)
@click.argument("versions", nargs=-1, metavar="[VERSIONS]...")
@click.option("--timeout", type=float, default=None,
              help="Seconds per runtime build, waiting for another process's build included "
                   "(default: no bound).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per runtime.")
@user_errors
def prepare_runtimes_command(versions, timeout, as_json):
    """Build the runtimes ``versions`` (default: all), each once; see ``_HELP``."""
    from mlflow.exceptions import MlflowException

    from mlflow_eas_savedmodel.eas.commands import progress_on_stderr
    from mlflow_eas_savedmodel.runtimes.environments import RUNTIMES, version_key, ensure_runtime, get_runtime_spec

    chosen = [get_runtime_spec(v).tf_version for v in versions] or sorted(RUNTIMES, key=version_key)
    failed = []
    for version in dict.fromkeys(chosen):
        started = time.monotonic()
        try:
            with progress_on_stderr():
                env = ensure_runtime(version, timeout=timeout)
        except MlflowException as e:
            failed.append(version)
            click.echo(f"TF {version} runtime: not built: {e.message}", err=True)
            continue
        seconds = round(time.monotonic() - started, 1)
        if as_json:
            click.echo(json.dumps({**env.__dict__, "seconds": seconds}))
        else:
            click.echo(f"TF {version} runtime ready: {env.wheel} on CPython {env.interpreter_version} "
                       f"in {env.path} ({seconds} s)")
    if failed:
        click.echo(f"Error: {len(failed)} runtime(s) not built: {', '.join(failed)} (reasons above).", err=True)
        sys.exit(1)


commands = [prepare_runtimes_command]
