"""The EAS commands of the ``mlflow-eas-savedmodel`` CLI (collected by :mod:`..cli`).

Each command imports what it needs when it runs, so ``inspect`` and ``eas-config`` never
load TensorFlow. User errors (``MlflowException``, ``OSError``) become ``Error: ...`` and exit code 1
(:mod:`..cli_errors`).
"""

import json
import sys

import click

from mlflow_eas_savedmodel.cli_errors import user_errors


_user_errors = user_errors  # the name the commands below use


@click.command("inspect")
@click.argument("model_uri")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_user_errors
def inspect_command(model_uri, as_json):
    """Show every SignatureDef, the EAS processors and the TF version, without TensorFlow."""
    from mlflow_eas_savedmodel.eas.describe import describe_model, format_description

    description = describe_model(model_uri)
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))


@click.command("export")
@click.argument("model_uri")
@click.argument("dest")
@click.option("--archive", type=click.Choice(["tar.gz", "zip"]), default=None,
              help="Write an archive with the SavedModel files at its root instead of a folder.")
@_user_errors
def export_command(model_uri, dest, archive):
    """Write the plain SavedModel (folder or archive) for OSS, with a sha256 manifest beside it."""
    from mlflow_eas_savedmodel.eas.upload import export_for_upload

    result = export_for_upload(model_uri, dest, archive=archive)
    click.echo(f"Wrote {result['path']} ({len(result['files'])} files)")
    click.echo(f"Manifest {result['manifest']}")


@click.command("eas-config")
@click.argument("model_uri")
@click.option("--processor", required=True, help="EAS processor code, e.g. tensorflow_cpu_1.15.")
@click.option("--model-path", required=True, help="oss:// or http(s):// URL of the exported model.")
@click.option("--warm-up-path", default=None, help="oss:// URL of a warm-up .bin (see `warmup`).")
@click.option("--name", default=None, help="Service name (default: derived from MODEL_URI).")
@click.option("--instance", type=int, default=1, show_default=True)
@click.option("--cpu", type=int, default=2, show_default=True)
@click.option("--memory", type=int, default=4000, show_default=True, help="MB per instance.")
@click.option("--batching", is_flag=True, help="Enable EAS server-side batching (rpc.batching).")
@click.option("--max-batch-size", type=int, default=None, help="rpc.max_batch_size (with --batching).")
@_user_errors
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
@click.argument("model_uri")
@click.option("--name", required=True, help="Service name: requests go to /api/predict/<name>.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; 0.0.0.0 exposes the endpoint to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="0 picks a free port.")
@click.option("--device", default="cpu", show_default=True)
@_user_errors
def serve_eas_command(model_uri, name, host, port, device):
    """Answer EAS TensorFlow-processor requests for MODEL_URI locally (smoke tests)."""
    from mlflow_eas_savedmodel.eas.endpoint import serve_eas

    endpoint = serve_eas(model_uri, name, host=host, port=port, device=device)
    click.echo(f"Serving {model_uri} at {endpoint.url} (Ctrl-C stops)")
    sys.stdout.flush()
    endpoint.serve_forever()


@click.command("check-runtime")
@click.argument("model_uri")
@click.option("--processor", default=None,
              help="EAS processor whose official TF wheel runs the model, e.g. tensorflow_cpu_1.15 "
                   "(default: every processor the model's metadata claims).")
@click.option("--all", "all_runtimes", is_flag=True, help="Check all six runtimes (TF 1.12-2.7).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds per runtime.")
@_user_errors
def check_runtime_command(model_uri, processor, all_runtimes, as_json, timeout):
    """Run MODEL_URI in the real EAS TensorFlow runtime(s) and compare with TF 2.21; exit 1 on failure."""
    from mlflow_eas_savedmodel.eas.runtime_check import check_runtime

    if processor and all_runtimes:
        raise click.UsageError("Pass either --processor or --all, not both.")
    report = check_runtime(model_uri, processor=processor, all=all_runtimes, timeout=timeout)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
    if not report.ok:
        sys.exit(1)


@click.command("warmup")
@click.argument("model_uri")
@click.argument("out_dir")
@click.option("--signature", "signatures", multiple=True,
              help="SignatureDef to warm up (repeatable; default: all).")
@_user_errors
def warmup_command(model_uri, out_dir, signatures):
    """Write EAS warm-up .bin files and TF Serving's assets.extra/tf_serving_warmup_requests."""
    from mlflow_eas_savedmodel.eas.warmup import write_warmup_files

    written = write_warmup_files(model_uri, out_dir, signatures=signatures or None)
    for name, path in written["eas"].items():
        click.echo(f"EAS warm-up ({name}, {written['inputs_from'][name]}): {path}")
    click.echo(f"TF Serving warm-up: {written['tf_serving']}")


commands = [warmup_command, inspect_command, export_command, eas_config_command, serve_eas_command, check_runtime_command]
