"""``PluginDeploymentClient``: EAS services managed through MLflow's deployment API.

``create`` and ``update`` run the package's own steps on the model (``export`` for the
SavedModel, ``warmup`` for the EAS warm-up request, ``eas-config`` for the service JSON), upload
the result under ``-C oss_path`` and call the EAS OpenAPI, then wait for ``Running`` and for the
service's gateway to route requests (as alipai does), with one progress line on stderr per change.
Every precondition is checked before anything is uploaded: the processor is one the model claims
(and a GPU processor gets a GPU), ``-C require_check=true`` finds a passing runtime check
(model-version tag ``eas.check.<processor>`` starting with ``passed``), a region is known and the
default credential chain yields credentials.

Which model a service runs is written twice: as EAS service labels (``mlflow_model_uri``,
``mlflow_model_name``, ``mlflow_model_version``), which ``get``/``list`` read back, and as the
model-version tag ``eas.deployment.<service>`` (JSON: service, region, endpoint, processor,
model path), moved by ``update`` and removed by ``delete``. The service token is never recorded.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import RESOURCE_DOES_NOT_EXIST, MlflowException

from mlflow_eas_savedmodel.deployments.options import (
    OPTIONS,
    TOKEN_ENV_VAR,
    apply_fields,
    check_flavor,
    check_gpu,
    parse_options,
    region_of_target,
    require,
    require_region,
    service_fields,
    split_oss_path,
)
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.flavor_conf import FLAVOR_NAME
from mlflow_eas_savedmodel.registry_tags import check_passed, check_tag, registered_version

DEPLOYMENT_TAG_PREFIX = "eas.deployment."
LABEL_URI, LABEL_NAME, LABEL_VERSION = "mlflow_model_uri", "mlflow_model_name", "mlflow_model_version"
RUNNING = "Running"
FAILED_STATUSES = ("Failed", "Stopped", "DeleteFailed", "Deleting", "Deleted")
GATEWAY_MAX_ERRORS = 3  # alipai's err_count_threshold


def _progress(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _pinned_uri(model_uri, target):
    """The URI of exactly the resolved version: an alias may move while we deploy."""
    return target.uri if target is not None else model_uri


def _labels(model_uri, target):
    labels = {LABEL_URI: model_uri}
    if target is not None:
        labels.update({LABEL_NAME: target.name, LABEL_VERSION: target.version})
    return labels


def _require_passing_check(model_uri, target, processor):
    """Refuses the model unless its version's ``eas.check.<processor>`` tag is a passing one."""
    if target is None:
        raise invalid_parameter_value(
            f"-C require_check=true needs a registered model version (models:/<name>/<version> or "
            f"models:/<name>@<alias>) to read its check-runtime tag; got {model_uri!r}."
        )
    from mlflow import MlflowClient

    tag = check_tag(processor)
    value = MlflowClient().get_model_version(target.name, target.version).tags.get(tag)
    if not check_passed(value):
        raise invalid_parameter_value(
            f"Model {target.name!r} version {target.version} has no passing runtime check for "
            f"{processor} (tag {tag} is {value!r}). Run `mlflow-eas-savedmodel check-runtime "
            f"models:/{target.name}/{target.version} --processor {processor}`, or leave out "
            "-C require_check=true."
        )


class PluginDeploymentClient(BaseDeploymentClient):
    """EAS services of one region (target ``eas`` or ``eas:/<region>``) as MLflow deployments."""

    def __init__(self, target_uri):
        super().__init__(target_uri)
        self.default_region = region_of_target(target_uri)

    # -- plumbing ------------------------------------------------------------------------------

    def _options(self, config):
        return parse_options(config, self.target_uri)

    def _connect(self, options):
        from mlflow_eas_savedmodel.deployments.cloud import EasServices, default_credentials

        region = require_region(options)
        credentials = default_credentials()
        return EasServices(region, credentials, endpoint=options["eas_endpoint"]), credentials

    def _preconditions(self, name, model_uri, options):
        """Everything checked before an upload: ``(registered version or None, flavor conf, oss
        bucket, prefix)``."""
        from mlflow_eas_savedmodel.eas.mlmodel import load_flavor_metadata

        processor = require(options, "processor", "tensorflow_cpu_1.15")
        check_gpu(options)
        bucket, prefix = split_oss_path(require(options, "oss_path", "oss://my-bucket/models/"))
        target = registered_version(model_uri)
        _, conf = load_flavor_metadata(_pinned_uri(model_uri, target))
        # The service JSON is written once here with the final OSS prefix, only to have eas-config
        # refuse a processor, name or size it would refuse after the upload.
        self._service_json(
            _pinned_uri(model_uri, target), f"oss://{bucket}/{prefix}{name}/", None, name, options
        )
        if options["require_check"]:
            _require_passing_check(model_uri, target, processor)
        return target, conf, bucket, prefix

    def _upload_and_configure(self, name, model_uri, target, conf, bucket, prefix, options, credentials):
        """Exports, writes the warm-up request, uploads both; returns the EAS service JSON."""
        from mlflow_eas_savedmodel.artifact_check import check_model_folder
        from mlflow_eas_savedmodel.deployments.cloud import OssUploader
        from mlflow_eas_savedmodel.eas.mlmodel import download_model
        from mlflow_eas_savedmodel.eas.package import MANIFEST_SUFFIX, write_eas_package
        from mlflow_eas_savedmodel.eas.warmup import write_eas_warmup_files

        uploader = OssUploader(options["region"], credentials, bucket, endpoint=options["oss_endpoint"])
        with tempfile.TemporaryDirectory(prefix="eas-deploy-") as tmp:
            pinned = _pinned_uri(model_uri, target)
            local, _, _ = download_model(pinned, dst_path=_new_dir(tmp, "model"))
            check_model_folder(local, where=pinned)  # before any upload
            exported = write_eas_package(local, os.path.join(tmp, "savedmodel"))
            label = f"v{target.version}" if target else "sha-" + _content_hash(exported["files"])
            base = f"{prefix}{name}/{label}/"
            uploads = [
                (f"{base}savedmodel/{rel}", os.path.join(exported["path"], rel)) for rel in exported["files"]
            ]
            uploads.append((f"{base}savedmodel{MANIFEST_SUFFIX}", exported["manifest"]))
            warm_up_path = None
            if options["warm_up"]:
                signature = options["warm_up_signature"] or conf.default_signature
                files = write_eas_warmup_files(local, os.path.join(tmp, "warmup"), signatures=[signature])
                key = base + os.path.basename(files[signature])
                uploads.append((key, files[signature]))
                warm_up_path = f"oss://{bucket}/{key}"
            total = sum(os.path.getsize(path) for _, path in uploads)
            _progress(f"Uploading {len(uploads)} files ({total / 1024:.1f} KiB) to oss://{bucket}/{base}")
            for key, path in uploads:
                uploader.put_file(key, path)
            return self._service_json(local, f"oss://{bucket}/{base}savedmodel/", warm_up_path, name, options)

    @staticmethod
    def _service_json(model_uri, model_path, warm_up_path, name, options):
        """eas-config's service JSON (it checks processor, name, paths), then every option's field."""
        from mlflow_eas_savedmodel.eas.service_config import service_config

        defaults = {o.key: o.default for o in OPTIONS}
        config = service_config(
            model_uri,
            options["processor"],
            model_path,
            warm_up_data_path=warm_up_path,
            name=name,
            instance=options["instance"],
            # eas-config always sizes the instances; an instance type replaces that (below).
            cpu=options["cpu"] or defaults["cpu"],
            memory=options["memory"] or defaults["memory"],
            batching=options["batching"],
            max_batch_size=options["max_batch_size"],
        )
        if options["instance_type"]:
            for key in ("cpu", "memory"):
                config["metadata"].pop(key, None)
        fields = service_fields(options)
        if not warm_up_path:
            fields.pop("metadata.rpc.warm_up_count_per_file", None)
        return apply_fields(config, fields)

    def _wait_running(self, services, name, options):
        """Polls DescribeService until the service runs its latest version; returns it."""
        deadline = time.monotonic() + options["timeout"]
        last = None
        while True:
            service = services.describe(name)
            if service is None:
                raise MlflowException(
                    f"EAS service {name!r} disappeared from {services.region} while starting."
                )
            rollout_done = service.latest_version is None or service.current_version == service.latest_version
            line = (
                f"EAS service {name}: {service.status} ({service.running_instance or 0}/"
                f"{service.total_instance or '?'} instances running)"
            )
            if line != last:
                _progress(line)
                last = line
            if service.status == RUNNING and rollout_done:
                return service
            if service.status in FAILED_STATUSES:
                raise MlflowException(
                    f"EAS service {name!r} is {service.status}: {service.message or ''} "
                    f"{service.reason or ''}".rstrip()
                    + f". Inspect it with `mlflow deployments get -t eas --name {name}` or in the EAS console."
                )
            if time.monotonic() >= deadline:
                raise MlflowException(
                    f"EAS service {name!r} is still {service.status} after {options['timeout']:g} s "
                    f"(last message: {service.message or ''!r}). "
                    f"It keeps starting on EAS: follow it with `mlflow deployments get -t eas --name {name}`, "
                    "or wait longer with -C timeout=<seconds>."
                )
            time.sleep(options["poll_interval"])

    def _wait_gateway(self, services, name, service, options):
        """GETs the service's endpoint with its token until EAS's gateway routes to an instance.

        EAS reports Running before its gateway has a healthy upstream for the instances: a request
        then gets 503 "no healthy upstream" (or a bodiless 503/404 while the route is set up).
        alipai (``Predictor._wait_for_gateway_ready``) GETs the endpoint with the token up to 60
        times, 2 s apart, until the answer is anything else, and stops trying after 3 connection
        errors; this does the same, bounded by ``-C gateway_timeout`` (a timeout is an error naming
        the service's last status and message), with one progress line per change.
        """
        import requests

        if not options["gateway_timeout"]:
            return
        url = _predict_url(self._describe(service, options)["endpoint"], name)
        token = options["token"] or service.access_token or os.environ.get(TOKEN_ENV_VAR)
        headers = {"Authorization": token} if token else {}
        deadline = time.monotonic() + options["gateway_timeout"]
        last, errors = None, 0
        while True:
            try:
                response = requests.get(url, headers=headers, timeout=min(10.0, max(1.0, deadline - time.monotonic())))
            except requests.RequestException as e:
                errors += 1
                state = f"no answer ({type(e).__name__})"
                if errors >= GATEWAY_MAX_ERRORS:
                    _progress(
                        f"EAS service {name}: cannot reach its endpoint {url} from here ({errors} tries); not "
                        "waiting for the gateway (inside the service's VPC use -C endpoint_type=intranet)"
                    )
                    return
            else:
                state = f"HTTP {response.status_code}" + (
                    f" {response.text.strip()[:80]!r}" if response.content.strip() else " (no body)"
                )
                if not _gateway_pending(response.status_code, response.content):
                    _progress(f"EAS service {name}: gateway ready ({state})")
                    return
            if state != last:
                _progress(f"EAS service {name}: Running, gateway at {url} answers {state}; waiting")
                last = state
            if time.monotonic() >= deadline:
                latest = services.describe(name)
                status, message = (latest.status, latest.message or "") if latest else ("deleted", "")
                raise MlflowException(
                    f"The endpoint {url} of EAS service {name!r} still answers {state} after "
                    f"{options['gateway_timeout']:g} s: EAS's gateway has no healthy instance to route to "
                    f"(service status {status}, message {message!r}). Follow it with `mlflow deployments get "
                    f"-t eas --name {name}` or in the EAS console, or wait longer with -C gateway_timeout=<seconds>."
                )
            time.sleep(options["gateway_interval"])

    def _describe(self, service, options=None):
        config = {}
        try:
            config = json.loads(service.service_config or "{}")
        except ValueError:
            pass
        labels = {label.label_key: label.label_value for label in service.labels or []}
        prefer_intranet = options is not None and options["endpoint_type"] == "intranet"
        return {
            "name": service.service_name,
            "status": service.status,
            "region": service.region,
            "endpoint": service.intranet_endpoint if prefer_intranet else service.internet_endpoint,
            "internet_endpoint": service.internet_endpoint,
            "intranet_endpoint": service.intranet_endpoint,
            "processor": config.get("processor"),
            "model_path": config.get("model_path"),
            "model_uri": labels.get(LABEL_URI),
            "model_name": labels.get(LABEL_NAME),
            "model_version": labels.get(LABEL_VERSION),
            "running_instance": service.running_instance,
            "total_instance": service.total_instance,
            "message": service.message,
            "flavor": FLAVOR_NAME,
        }

    def _record(self, target, description):
        if target is None:
            return
        from mlflow import MlflowClient

        value = {
            k: description[k]
            for k in ("name", "region", "endpoint", "intranet_endpoint", "processor", "model_path")
        }
        MlflowClient().set_model_version_tag(
            target.name,
            target.version,
            DEPLOYMENT_TAG_PREFIX + description["name"],
            json.dumps(value, sort_keys=True),
        )

    @staticmethod
    def _forget(labels_of, name):
        if not labels_of.get("model_version"):
            return
        from mlflow import MlflowClient

        try:
            MlflowClient().delete_model_version_tag(
                labels_of["model_name"], labels_of["model_version"], DEPLOYMENT_TAG_PREFIX + name
            )
        except MlflowException:  # the version or its tag went away in the registry meanwhile
            pass

    # -- MLflow's deployment API ---------------------------------------------------------------

    def create_deployment(self, name, model_uri, flavor=None, config=None, endpoint=None):
        """Uploads ``model_uri`` and creates EAS service ``name``; blocks until it runs."""
        check_flavor(flavor)
        options = self._options(config)
        target, conf, bucket, prefix = self._preconditions(name, model_uri, options)
        services, credentials = self._connect(options)
        if services.describe(name) is not None:
            raise invalid_parameter_value(
                f"EAS service {name!r} already exists in {services.region}. Roll it to this model with "
                f"`mlflow deployments update -t eas --name {name} -m {model_uri}`, or delete it first."
            )
        service_json = self._upload_and_configure(
            name, model_uri, target, conf, bucket, prefix, options, credentials
        )
        services.create(json.dumps(service_json), _labels(model_uri, target))
        _progress(
            f"CreateService {name} in {services.region}; waiting for {RUNNING} (timeout {options['timeout']:g} s)"
        )
        running = self._wait_running(services, name, options)
        description = self._describe(running, options)
        self._record(target, description)  # the service exists and runs: recorded even if the gateway lags
        self._wait_gateway(services, name, running, options)
        return description

    def update_deployment(self, name, model_uri=None, flavor=None, config=None, endpoint=None):
        """Rolls service ``name`` to ``model_uri`` (default: the model it runs, with new options)."""
        check_flavor(flavor)
        options = self._options(config)
        services, credentials = self._connect(options)
        service = services.describe(name)
        if service is None:
            raise invalid_parameter_value(
                f"No EAS service {name!r} in {services.region} to update. Create it with "
                f"`mlflow deployments create -t eas --name {name} -m <model uri>`."
            )
        before = self._describe(service)
        model_uri = model_uri or before["model_uri"]
        if not model_uri:
            raise invalid_parameter_value(
                f"EAS service {name!r} was not created by this plugin; pass the model with -m <model uri>."
            )
        target, conf, bucket, prefix = self._preconditions(name, model_uri, options)
        service_json = self._upload_and_configure(
            name, model_uri, target, conf, bucket, prefix, options, credentials
        )
        services.update(name, json.dumps(service_json))
        services.set_labels(name, _labels(model_uri, target))
        _progress(
            f"UpdateService {name} in {services.region}; waiting for {RUNNING} (timeout {options['timeout']:g} s)"
        )
        running = self._wait_running(services, name, options)
        description = self._describe(running, options)
        now = (target.name, target.version) if target else (None, None)
        if (before["model_name"], before["model_version"]) != now:
            self._forget(before, name)
        self._record(target, description)
        self._wait_gateway(services, name, running, options)
        return description

    def delete_deployment(self, name, config=None, endpoint=None):
        """Deletes service ``name`` (no error when it does not exist) and its model-version tag."""
        options = self._options(config)
        services, _ = self._connect(options)
        service = services.describe(name)
        if service is None:
            _progress(f"EAS service {name} does not exist in {services.region}; nothing to delete")
            return None
        services.delete(name)
        self._forget(self._describe(service), name)
        return None

    def list_deployments(self, endpoint=None):
        """Every EAS service of the region, with status, endpoint and model version."""
        options = self._options(None)
        services, _ = self._connect(options)
        return [self._describe(s, options) for s in services.list()]

    def get_deployment(self, name, endpoint=None):
        """Status, endpoints, processor and model version of service ``name``."""
        options = self._options(None)
        services, _ = self._connect(options)
        service = services.describe(name)
        if service is None:
            raise MlflowException(
                f"No EAS service {name!r} in {services.region}.", error_code=RESOURCE_DOES_NOT_EXIST
            )
        return self._describe(service, options)

    def predict(self, deployment_name=None, inputs=None, endpoint=None):
        """Sends ``inputs`` to service ``deployment_name`` with EAS's TensorFlow protocol.

        Args:
            deployment_name: the service.
            inputs: ``{key: values}``, ``{"inputs": {key: values}, "params": {"signature_name":
                ...}}`` or a pandas DataFrame whose columns are the input keys.

        Returns:
            ``PredictionsResponse({"predictions": {output key: nested list}})``.
        """
        import requests

        from mlflow_eas_savedmodel.eas import protocol
        from mlflow_eas_savedmodel.eas.mlmodel import load_flavor_metadata

        options = self._options(None)
        services, _ = self._connect(options)
        service = services.describe(deployment_name)
        if service is None:
            raise MlflowException(
                f"No EAS service {deployment_name!r} in {services.region}.",
                error_code=RESOURCE_DOES_NOT_EXIST,
            )
        description = self._describe(service, options)
        url = _predict_url(description["endpoint"], deployment_name)
        token = os.environ.get(TOKEN_ENV_VAR) or service.access_token
        if not token:
            raise invalid_parameter_value(
                f"No token for EAS service {deployment_name!r}: DescribeService returned none; set ${TOKEN_ENV_VAR}."
            )
        feeds, signature_name = _as_feeds(inputs)
        dtypes = None
        deployed = (
            f"models:/{description['model_name']}/{description['model_version']}"
            if description["model_version"]
            else description["model_uri"]
        )
        if deployed:
            _, conf = load_flavor_metadata(deployed)
            signature = conf.signature_defs.get(signature_name or conf.default_signature)
            if signature is not None:
                dtypes = {k: t["dtype"] for k, t in signature["inputs"].items()}
        body = protocol.encode_request(feeds, signature_name=signature_name, dtypes=dtypes)
        response = requests.post(url, data=body, headers={"Authorization": token}, timeout=60)
        if response.status_code != 200:
            raise MlflowException(
                f"EAS service {deployment_name!r} answered HTTP {response.status_code}: {response.text[:2000]}"
            )
        outputs = protocol.decode_response(response.content)
        return PredictionsResponse({"predictions": {k: _jsonable(v) for k, v in outputs.items()}})


def _gateway_pending(status_code, content):
    """alipai's test of a gateway that is not routing yet: 503 "no healthy upstream" or bodiless, 404 bodiless."""
    return (status_code == 503 and (b"no healthy upstream" in content or not content)) or (
        status_code == 404 and not content
    )


def _predict_url(endpoint, name):
    if not endpoint:
        raise invalid_parameter_value(
            f"EAS service {name!r} has no endpoint yet; wait until it runs (`mlflow deployments get`)."
        )
    url = endpoint if "://" in endpoint else "http://" + endpoint
    return url if "/api/predict/" in url else url.rstrip("/") + "/api/predict/" + name


def _as_feeds(inputs):
    """``({key: array} or one array, signature_name or None)`` of predict's accepted inputs."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency of MLflow
        pd = None
    signature_name = None
    if isinstance(inputs, dict) and "inputs" in inputs:
        signature_name = (inputs.get("params") or {}).get("signature_name")
        inputs = inputs["inputs"]
    if pd is not None and isinstance(inputs, pd.DataFrame):
        inputs = {c: np.stack([np.asarray(v) for v in inputs[c].to_numpy()]) for c in inputs.columns}
    if isinstance(inputs, dict):
        return {k: np.asarray(v) for k, v in inputs.items()}, signature_name
    raise invalid_parameter_value(
        "predict takes {input key: values}, {'inputs': {...}, 'params': {'signature_name': ...}} or "
        f"a DataFrame whose columns are the input keys; got {type(inputs).__name__}."
    )


def _jsonable(array):
    if array.dtype.kind in "OS":
        return np.vectorize(
            lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v, otypes=[object]
        )(array).tolist()
    return array.tolist()


def _content_hash(files):
    """12 hex digits over every SavedModel file's SHA-256: another model never lands on this path."""
    import hashlib

    digest = hashlib.sha256("".join(f"{rel}\0{sha}\n" for rel, sha in sorted(files.items())).encode())
    return digest.hexdigest()[:12]


def _new_dir(parent, name):
    path = os.path.join(parent, name)
    os.makedirs(path)
    return path
