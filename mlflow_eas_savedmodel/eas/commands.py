"""The EAS commands of the ``mlflow-eas-savedmodel`` CLI (collected by :mod:`..cli`).

Each command imports what it needs when it runs, so ``inspect`` and ``eas-config`` never
load TensorFlow. User errors (``MlflowException``, ``OSError``) become ``Error: ...`` and exit code 1
(:mod:`..cli_errors`).
"""

import contextlib
import json
import logging
import os
import sys

import click

from mlflow_eas_savedmodel.cli_errors import user_errors

from mlflow_eas_savedmodel.cli_options import model_uri_argument, store_options
from mlflow_eas_savedmodel.eas.runtime_check import DEFAULT_PROCESSOR, DEFAULT_TIMEOUT_S
from mlflow_eas_savedmodel.runtimes.table import count_word, version_span




@click.command("inspect")
@model_uri_argument()
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def inspect_command(model_uri, as_json):
    """Show every SignatureDef, the EAS processors and the TF version, without TensorFlow."""
    from mlflow_eas_savedmodel.eas.inspection import describe_model, format_description

    description = describe_model(model_uri)
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))


@click.command("export")
@model_uri_argument("dest")
@store_options
@click.option("--archive", type=click.Choice(["tar.gz", "zip"]), default=None,
              help="Write DEST/savedmodel.tar.gz or DEST/savedmodel.zip (the SavedModel files "
                   "at its root) instead of the folder DEST/savedmodel/.")
@click.option("--warmup", is_flag=True,
              help="Put TF Serving's assets.extra/tf_serving_warmup_requests inside the exported "
                   "SavedModel and EAS's warm_up_<signature>.bin into DEST.")
@user_errors
def export_command(model_uri, dest, archive, warmup):
    """Write the new folder DEST for OSS: the plain SavedModel (folder or archive), the warm-up
    files (--warmup) and a SHA256SUMS manifest, nothing outside DEST."""
    from mlflow_eas_savedmodel.eas.package import write_eas_package

    result = write_eas_package(model_uri, dest, archive=archive, warmup=warmup)
    click.echo(f"Wrote {len(result['written'])} files into {result['dest']}:")
    saved_model = os.path.relpath(result["path"], result["dest"])
    kind = f"{archive} archive" if archive else f"folder, {len(result['files'])} files"
    click.echo(f"  {saved_model}{'' if archive else '/'}  SavedModel ({kind}): the service's model_path")
    for name, path in result["warmup"].items():
        click.echo(f"  {os.path.basename(path)}  EAS warm-up request ({name}): warm_up_data_path")
    if warmup:
        click.echo("  (TF Serving's assets.extra/tf_serving_warmup_requests is inside the SavedModel)")
    click.echo(f"  {os.path.basename(result['manifest'])}  manifest: sha256sum -c {os.path.basename(result['manifest'])}")


@click.command("eas-config")
@model_uri_argument()
@store_options
@click.option("--processor", required=True, help="EAS processor code, e.g. tensorflow_cpu_1.15.")
@click.option("--model-path", required=True, help="oss:// or http(s):// URL of the exported model.")
@click.option("--warm-up-path", default=None, help="oss:// URL of a warm-up .bin (see `warmup`).")
@click.option("--name", default=None, help="Service name (default: derived from MODEL_URI).")
@click.option("--instance", type=int, default=1, show_default=True)
@click.option("--cpu", type=int, default=2, show_default=True)
@click.option("--memory", type=int, default=4000, show_default=True, help="MB per instance.")
@click.option("--batching", is_flag=True, help="Enable EAS server-side batching (rpc.batching).")
@click.option("--max-batch-size", type=int, default=None, help="rpc.max_batch_size (with --batching).")
@user_errors
def eas_config_command(model_uri, processor, model_path, warm_up_path, name, instance, cpu,
                       memory, batching, max_batch_size):
    """Print the EAS service JSON; refuses a processor the model is not compatible with."""
    from mlflow_eas_savedmodel.eas.service_config import service_config

    config = service_config(
        model_uri, processor, model_path, warm_up_data_path=warm_up_path, name=name,
        instance=instance, cpu=cpu, memory=memory, batching=batching,
        max_batch_size=max_batch_size,
    )
    click.echo(json.dumps(config, indent=2))


@click.command("serve-eas")
@model_uri_argument()
@store_options
@click.option("--name", required=True, help="Service name: requests go to /api/predict/<name>.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; 0.0.0.0 exposes the endpoint to the network.")
@click.option("-p", "--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="0 picks a free port.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--token", default=None,
              help="Answer 401 unless a request's Authorization header is this token, as EAS "
                   "does (GET /ping and /health answer without it).")
@user_errors
def serve_eas_command(model_uri, name, host, port, device, token):
    """Answer EAS TensorFlow-processor requests for MODEL_URI locally (smoke tests).

    TensorFlow 2.21 in this process: fast to start. To answer from the processor's own old
    runtime, use `mlflow deployments run-local -t eas`. GET /ping answers 200 once it serves.
    """
    from mlflow_eas_savedmodel.eas.endpoint import serve_eas

    endpoint = serve_eas(model_uri, name, host=host, port=port, device=device, token=token)
    click.echo(f"Serving {model_uri} at {endpoint.url} (Ctrl-C stops)")
    sys.stdout.flush()
    endpoint.serve_forever()


@click.command("check-runtime")
@model_uri_argument()
@store_options
@click.option("--processor", default=None,
              help="EAS processor whose official TF wheel runs the model "
                   f"(default: {DEFAULT_PROCESSOR}, as in the Python API).")
@click.option("--claimed", is_flag=True,
              help="Check every processor the model's metadata claims instead.")
@click.option("--all", "all_runtimes", is_flag=True, help=f"Check all {count_word()} runtimes (TF {version_span()}).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds per runtime, building its environment on first use included.")
@click.option("--rtol", type=float, default=1e-5, show_default=True,
              help="Float outputs may differ from TF 2.21's by atol + rtol x max|output|.")
@click.option("--atol", type=float, default=1e-6, show_default=True, help="See --rtol.")
@click.option("--input", "input_file", type=click.Path(dir_okay=False), default=None,
              help="Inputs to feed instead of the input example: .npz (KEY or SIGNATURE/KEY "
                   "arrays) or .json ({key: values} or {signature: {key: values}}).")
@user_errors
def check_runtime_command(
    model_uri, processor, claimed, all_runtimes, as_json, timeout, rtol, atol, input_file
):
    """Run MODEL_URI in the real EAS TensorFlow runtime(s) and compare with TF 2.21; exit 1 on failure.

    On a models:/ URI the result is recorded on the version as eas.check.<processor> tags.
    Building a runtime environment (first use) prints its stages on stderr.
    """
    from mlflow_eas_savedmodel.eas.inputs import load_inputs_file
    from mlflow_eas_savedmodel.eas.runtime_check import check_runtime

    if sum([processor is not None, claimed, all_runtimes]) > 1:
        raise click.UsageError("Pass one of --processor, --claimed and --all.")
    if not claimed and not all_runtimes:
        processor = processor or DEFAULT_PROCESSOR
    inputs = load_inputs_file(input_file) if input_file else None
    with progress_on_stderr():
        report = check_runtime(
            model_uri, processor=processor, all_runtimes=all_runtimes, inputs=inputs, timeout=timeout,
            rtol=rtol, atol=atol,
        )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
    for key, value in report.recorded_tags.items():
        click.echo(f"Recorded {key}={value!r} on {report.recorded_on}", err=True)
    if not report.ok:
        sys.exit(1)


@contextlib.contextmanager
def progress_on_stderr():
    """The runtime environments' build stages (INFO log lines) on stderr, for this command."""
    logger = logging.getLogger("mlflow_eas_savedmodel.runtimes.environments")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@click.command("warmup")
@model_uri_argument("out_dir")
@store_options
@click.option("--signature", "signatures", multiple=True,
              help="SignatureDef to warm up (repeatable; default: all).")
@user_errors
def warmup_command(model_uri, out_dir, signatures):
    """Write EAS warm-up .bin files and TF Serving's assets.extra/tf_serving_warmup_requests."""
    from mlflow_eas_savedmodel.eas.warmup import write_warmup_files

    written = write_warmup_files(model_uri, out_dir, signatures=signatures or None)
    for name, path in written["eas"].items():
        click.echo(f"EAS warm-up ({name}, {written['inputs_from'][name]}): {path}")
    click.echo(f"TF Serving warm-up: {written['tf_serving']}")


commands = [warmup_command, inspect_command, export_command, eas_config_command, serve_eas_command, check_runtime_command]
