"""Alibaba Cloud's official SDKs, as the ``eas`` target uses them: credentials, EAS OpenAPI, OSS.

- Credentials: ``alibabacloud-credentials``' default chain (environment variables, CLI and
  credentials-file profiles, OIDC, ECS RAM role), resolved once up front so that a machine
  without credentials is refused before anything is exported or uploaded.
- :class:`EasServices`: ``alibabacloud-eas20210701`` (CreateService, DescribeService,
  UpdateService, DeleteService, ListServices, UpdateServiceLabel); SDK errors become
  ``MlflowException`` with EAS's code and message.
- :class:`OssUploader`: ``alibabacloud-oss-v2`` PutObject per file (OSS takes up to 5 GB in one
  PutObject).

The EAS OpenAPI host is ``pai-eas.<region>.aliyuncs.com`` unless an endpoint is given (alipai's
default in every region). An endpoint given as ``http://host:port`` is used as is (plain HTTP);
that is how the tests point the SDKs at their local stand-ins. The SDKs are imported when a client is built, not at import.
"""

import logging

from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.deployments.options import DEFAULT_EAS_HOST
from mlflow_eas_savedmodel.errors import invalid_parameter_value

_logger = logging.getLogger(__name__)
EXTRA_HINT = 'pip install "mlflow-eas-savedmodel[eas]"'
NOT_FOUND = 404


def _sdk(module):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise invalid_parameter_value(
            f"The eas deployment target needs Alibaba Cloud's SDKs ({module} is missing): {EXTRA_HINT}."
        ) from e


def split_endpoint(endpoint):
    """``(host[:port], "http" | "https" | None)`` of an endpoint option."""
    if not endpoint:
        return None, None
    for scheme in ("http", "https"):
        if endpoint.startswith(scheme + "://"):
            return endpoint[len(scheme) + 3 :].rstrip("/"), scheme
    return endpoint.rstrip("/"), None


def default_credentials():
    """The default credential chain's client, checked to yield credentials now.

    Raises:
        MlflowException: no provider of the chain has credentials (the message says how to
            configure them).
    """
    client_module = _sdk("alibabacloud_credentials.client")
    client = client_module.Client()
    try:
        client.get_credential()
    except Exception as e:  # noqa: BLE001 - CredentialException and the providers' own errors
        raise invalid_parameter_value(
            "No Alibaba Cloud credentials found. Set ALIBABA_CLOUD_ACCESS_KEY_ID and "
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET (plus ALIBABA_CLOUD_SECURITY_TOKEN for STS), or "
            "configure a profile with `aliyun configure` (ALIBABA_CLOUD_PROFILE picks one), or "
            f"run on an ECS instance with a RAM role. The credential chain said: {e}"
        ) from e
    return client


class EasServices:
    """The EAS OpenAPI of one region (``cluster_id`` in EAS's paths is the region id)."""

    def __init__(self, region, credentials, endpoint=None):
        openapi = _sdk("alibabacloud_tea_openapi.models")
        self._eas = _sdk("alibabacloud_eas20210701.client")
        self.models = _sdk("alibabacloud_eas20210701.models")
        host, scheme = split_endpoint(endpoint)
        # Always named: the SDK's own map covers 15 regions and falls back to eas.<region>.aliyuncs.com
        # elsewhere, while alipai (ClientFactory.get_endpoint) dials pai-eas.<region>.aliyuncs.com.
        host = host or DEFAULT_EAS_HOST.format(region=region)
        config = openapi.Config(credential=credentials, region_id=region, endpoint=host)
        if scheme:
            config.protocol = scheme
        self.region = region
        self.endpoint = endpoint or host
        self.client = self._eas.Client(config)

    def _call(self, what, fn, *args, missing_ok=False):
        errors = _sdk("darabonba.exceptions")
        try:
            return fn(*args).body
        except errors.ResponseException as e:
            status = getattr(e, "status_code", None) or getattr(e, "statusCode", None)
            if missing_ok and status == NOT_FOUND:
                return None
            raise MlflowException(
                f"EAS {what} failed in {self.region}: HTTP {status} {e.code}: {e.message}"
            ) from e
        except errors.UnretryableException as e:  # no answer at all: DNS, connection, TLS
            raise MlflowException(
                f"EAS {what}: cannot reach the EAS OpenAPI at {self.endpoint} ({e.message}). Check the "
                "region, the network, or -C eas_endpoint / $MLFLOW_EAS_ENDPOINT."
            ) from e

    def create(self, service_json, labels):
        request = self.models.CreateServiceRequest(body=service_json, labels=labels)
        return self._call("CreateService", self.client.create_service, request)

    def describe(self, name):
        """The ``Service`` model, or ``None`` when there is no such service."""
        return self._call("DescribeService", self.client.describe_service, self.region, name, missing_ok=True)

    def update(self, name, service_json):
        request = self.models.UpdateServiceRequest(body=service_json)
        return self._call("UpdateService", self.client.update_service, self.region, name, request)

    def set_labels(self, name, labels):
        request = self.models.UpdateServiceLabelRequest(labels=labels)
        return self._call("UpdateServiceLabel", self.client.update_service_label, self.region, name, request)

    def delete(self, name):
        """Deletes ``name``; ``False`` when it did not exist."""
        body = self._call("DeleteService", self.client.delete_service, self.region, name, missing_ok=True)
        return body is not None

    def list(self, page_size=100):
        """Every service of the region (all pages)."""
        services, page = [], 1
        while True:
            request = self.models.ListServicesRequest(page_number=page, page_size=page_size)
            body = self._call("ListServices", self.client.list_services, request)
            services.extend(body.services or [])
            if not body.services or len(services) >= (body.total_count or 0):
                return services
            page += 1


class OssUploader:
    """PutObject into one bucket with the OSS SDK v2 (signature V4, the region's endpoint)."""

    def __init__(self, region, credentials, bucket, endpoint=None):
        oss = _sdk("alibabacloud_oss_v2")

        def current():
            cred = credentials.get_credential()
            return oss.credentials.Credentials(
                cred.access_key_id, cred.access_key_secret, cred.security_token or None
            )

        config = oss.config.load_default()
        config.credentials_provider = oss.credentials.CredentialsProviderFunc(current)
        config.region = region
        host, scheme = split_endpoint(endpoint)
        if host:
            config.endpoint = f"{scheme}://{host}" if scheme else host
            config.disable_ssl = scheme == "http"
        self._oss = oss
        self.region = region
        self.client = oss.Client(config)
        self.bucket = bucket

    def put_file(self, key, path):
        try:
            result = self.client.put_object_from_file(
                self._oss.PutObjectRequest(bucket=self.bucket, key=key), path
            )
        except Exception as e:  # noqa: BLE001 - the SDK wraps service errors in OperationError
            raise MlflowException(
                # The SDK's message spans several indented lines: one line reads better in a CLI.
                f"Uploading {path} to oss://{self.bucket}/{key} failed: {' '.join(str(e).split())} Check that bucket "
                f"{self.bucket!r} exists in {self.region} and that the credentials may write to it "
                "(-C oss_path, -C region, -C oss_endpoint)."
            ) from e
        return result.etag
