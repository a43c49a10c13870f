"""PAI-EAS as an MLflow deployment target: ``mlflow deployments ... -t eas``.

The plugin module MLflow loads through the ``mlflow.deployments`` entry point ``eas``: it has
the two functions and the one :class:`~mlflow.deployments.BaseDeploymentClient` subclass MLflow's
plugin convention asks for.

- :func:`run_local`: the model served with EAS's TensorFlow-processor protocol from the official
  runtime of the processor (:mod:`.local`, which prepares the model and starts ``_local_server.py``,
  the standalone server script the old interpreter runs).
- :class:`PluginDeploymentClient`: create/update/delete/get/list/predict of EAS services through
  Alibaba Cloud's SDKs (:mod:`.client`, :mod:`.cloud`).
- :func:`target_help`: the target URI and every ``-C`` option (:mod:`.options`).

Importing it imports neither TensorFlow nor the Alibaba Cloud SDKs (the ``eas`` extra).

Example (not run by the tests: it creates a service on Alibaba Cloud, which needs
credentials and the network)::

    from mlflow.deployments import get_deploy_client
    client = get_deploy_client("eas:/cn-shanghai")
    client.create_deployment("mnist", "models:/mnist@champion", config={
        "processor": "tensorflow_cpu_1.15", "oss_path": "oss://my-bucket/models/"})
"""

from mlflow_eas_savedmodel.deployments.client import PluginDeploymentClient
from mlflow_eas_savedmodel.deployments.local import run_local
from mlflow_eas_savedmodel.deployments.options import options_help

__all__ = ["PluginDeploymentClient", "run_local", "target_help"]


def target_help():
    """What ``mlflow deployments help -t eas`` prints."""
    return f"""\
PAI-EAS (Alibaba Cloud Elastic Algorithm Service), TensorFlow processors, for models saved by
mlflow_eas_savedmodel. Remote commands need the `eas` extra: pip install "mlflow-eas-savedmodel[eas]".

Target URI: eas  or  eas:/<region>  (e.g. eas:/cn-shanghai).
Deployment name: the EAS service name (lowercase letters, digits, '_', starting with a letter).
Credentials: Alibaba Cloud's default credential chain (alibabacloud-credentials): the
ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET (and _SECURITY_TOKEN) variables,
the ~/.aliyun/config.json profile (ALIBABA_CLOUD_PROFILE), ~/.alibabacloud/credentials.ini, OIDC
or the ECS RAM role.

create   exports the SavedModel (`mlflow-eas-savedmodel export`), writes the warm-up request
         (`warmup`) and the service JSON (`eas-config`), uploads them under -C oss_path, calls
         CreateService, waits for Running (progress on stderr, -C timeout), then until the
         service's gateway stops answering 503 "no healthy upstream" (-C gateway_timeout). The service name,
         region, endpoint and processor are recorded as the model-version tag
         eas.deployment.<service> (models:/ URIs).
update   uploads another model version the same way and rolls the service to it (UpdateService).
delete   DeleteService (a service that does not exist is not an error).
get/list status, endpoints, processor and model version (from the service's mlflow_model_* labels).
predict  sends EAS's TensorFlow protocol (PredictRequest) to the service endpoint with the service
         token; input: a DataFrame or {{"inputs": {{key: values}}, "params": {{"signature_name": ...}}}}.
run-local serves the model with the same protocol from the official TensorFlow runtime of the
         processor (Python 3.6-3.9 + the old wheel, built once under
         ~/.cache/mlflow-eas-savedmodel/runtimes/), replays the warm-up request first, logs each
         request's latency and stops on SIGINT/SIGTERM. GET /api/predict/<name> adds
         "tensorflow_version". A GPU processor is replicated on the CPU wheel of its version.

Options (-C key=value):
{options_help()}

The remote commands have been tested against local stand-ins of the EAS OpenAPI and OSS only,
never against a live EAS service.
"""
