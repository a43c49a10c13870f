"""``run_local``: a local replica of an EAS TensorFlow processor, in that processor's own runtime.

``serve-eas`` answers the EAS protocol from TensorFlow 2.21; this replica loads the model in the
official TensorFlow wheel of the chosen processor (the cached environment ``check-runtime``
builds, :func:`~mlflow_eas_savedmodel.runtimes.environments.ensure_runtime`) with the C++ loader
EAS uses, so what answers is what the processor would run. The old interpreter runs
``_local_server.py``; this process prepares its inputs (the SavedModel, the EAS warm-up request
of :mod:`mlflow_eas_savedmodel.eas.warmup`, the wire format of
:mod:`mlflow_eas_savedmodel.eas.protocol`), forwards SIGINT/SIGTERM to it and waits.

This module does not import TensorFlow.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile

from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.deployments.options import check_flavor, parse_options, require
from mlflow_eas_savedmodel.errors import invalid_parameter_value

SERVER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_local_server.py")


def wire_spec():
    """The wire format as plain data for ``_local_server.py``: one definition of the messages."""
    from mlflow_eas_savedmodel.eas import protocol

    return {
        "descriptor": base64.b64encode(protocol.file_descriptor().SerializeToString()).decode(),
        "wire": {str(code): [dtype.str if dtype.kind != "O" else "O", field]
                 for code, (dtype, field) in protocol.WIRE.items()},
        "dt_names": {str(code): name for name, code in protocol.DATA_TYPES.items()},
        "dt_string": protocol.DT_STRING,
    }


def prepare(name, model_uri, config, workdir):
    """Downloads and checks the model, writes the server's spec; returns ``(runtime env, spec path)``."""
    from mlflow_eas_savedmodel.artifact_check import check_model_folder
    from mlflow_eas_savedmodel.eas.mlmodel import download_model
    from mlflow_eas_savedmodel.eas.service_config import check_processor
    from mlflow_eas_savedmodel.eas.warmup import write_eas_warmup_files
    from mlflow_eas_savedmodel.runtimes.environments import ensure_runtime
    from mlflow_eas_savedmodel.runtimes.runtime_process import RUNNER_PATH

    if not name or "/" in name:
        raise invalid_parameter_value(
            f"Service name {name!r} must be non-empty and contain no '/'."
        )
    options = parse_options(config)
    processor = require(options, "processor", "tensorflow_cpu_1.15")
    os.makedirs(os.path.join(workdir, "model"))
    local, _, conf = download_model(model_uri, dst_path=os.path.join(workdir, "model"))
    # What load_model refuses is never handed to the old runtime either.
    check_model_folder(local, conf, where=model_uri)
    version = check_processor(conf, processor, model_uri)
    env = ensure_runtime(version)
    warmup_files = []
    if options["warm_up"]:
        signature = options["warm_up_signature"] or conf.default_signature
        files = write_eas_warmup_files(local, os.path.join(workdir, "warmup"), signatures=[signature])
        warmup_files = list(files.values())
    spec = dict(
        wire_spec(),
        saved_model_dir=os.path.abspath(conf.saved_model_path(local)),
        service_name=name,
        host=options["host"],
        port=options["port"],
        tags=["serve"],
        default_signature=conf.default_signature,
        warmup_files=warmup_files,
        warm_up_count=options["warm_up_count"] or 1,
        token=options["token"],  # the spec lives in a 0700 temporary folder
        runner_dir=os.path.dirname(RUNNER_PATH),
    )
    spec_path = os.path.join(workdir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    return env, spec_path


def run_local(name, model_uri, flavor=None, config=None):
    """Serves ``model_uri`` as EAS service ``name`` from the processor's runtime until stopped.

    Blocks until SIGINT/SIGTERM (both stop the replica cleanly) or until the replica fails.
    ``mlflow deployments run-local -t eas --name svc -m models:/m@champion
    -C processor=tensorflow_cpu_1.15 -C port=8080``; the official ``eas-prediction`` client
    then reaches it as ``PredictClient("127.0.0.1:8080", "svc")``. With ``-C token=T`` requests
    need ``Authorization: T`` (else 401), as on EAS; ``GET /ping`` answers 200 once it serves.

    Raises:
        MlflowException: a bad option, a processor the model does not claim, or a replica that
            could not load, warm up or listen (its reason is on stderr).
    """
    check_flavor(flavor)
    with tempfile.TemporaryDirectory(prefix="eas-local-") as workdir:
        env, spec_path = prepare(name, model_uri, config, workdir)
        child_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        child_env.update(PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore",
                         PYTHONUNBUFFERED="1",
                         CUDA_VISIBLE_DEVICES=child_env.get("CUDA_VISIBLE_DEVICES", "-1"))
        process = subprocess.Popen([env.python, SERVER_PATH, spec_path], env=child_env)

        def forward(signum, frame):
            if process.poll() is None:
                process.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = process.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if process.poll() is None:  # this process is being torn down: take the replica along
                process.terminate()
                process.wait()
    if code != 0:
        raise MlflowException(
            f"The local EAS replica of {model_uri!r} in TensorFlow {env.tf_version} exited with "
            f"code {code}; its reason is printed above."
        )
    sys.stderr.flush()
