"""The ``-C key=value`` options of the ``eas`` deployment target: one table, parsed and documented.

``mlflow deployments ... -C key=value`` hands every value over as a string; :func:`parse_options`
checks the keys against :data:`OPTIONS` (an unknown key is an error listing the known ones),
converts the values and fills in defaults, and :func:`options_help` writes the table that
``mlflow deployments help -t eas`` prints, so what is accepted and what is documented are the same
list.

This module imports neither TensorFlow nor Alibaba Cloud's SDKs.
"""

import dataclasses
import os
import re

from mlflow_eas_savedmodel.errors import invalid_parameter_value

FLAVOR = "eas_savedmodel"
REGION_ENV_VAR = "ALIBABA_CLOUD_REGION_ID"
# get/list/predict take no -C options in MLflow's CLI: endpoints also come from the environment.
EAS_ENDPOINT_ENV_VAR = "MLFLOW_EAS_ENDPOINT"
OSS_ENDPOINT_ENV_VAR = "MLFLOW_EAS_OSS_ENDPOINT"
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_OSS_PATH_RE = re.compile(r"^oss://([a-z0-9][a-z0-9-]{1,61}[a-z0-9])(/.*)?$")


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``-C`` key: its type, default, which commands read it, and its help line."""

    key: str
    kind: str  # "str", "int", "float" or "bool"
    default: object
    used_by: str  # e.g. "create, update"
    help: str


OPTIONS = (
    Option("processor", "str", None, "create, update, run-local",
           "EAS processor code, e.g. tensorflow_cpu_1.15 (required); must be one of the model's "
           "eas_processors (`mlflow-eas-savedmodel inspect`)."),
    Option("region", "str", None, "create, update, delete",
           f"Alibaba Cloud region id, e.g. cn-shanghai (default: the target URI `eas:/<region>`, "
           f"then ${REGION_ENV_VAR})."),
    Option("oss_path", "str", None, "create, update",
           "oss://bucket/prefix/ the model is uploaded under (required): "
           "<prefix>/<service>/<v<version>|sha-<hash>>/savedmodel/ and the warm-up .bin beside it."),
    Option("oss_endpoint", "str", None, "create, update",
           f"OSS endpoint for the upload (default: ${OSS_ENDPOINT_ENV_VAR}, then the OSS SDK's "
           "public endpoint of the region); http://host:port is taken as given."),
    Option("eas_endpoint", "str", None, "create, update, delete",
           f"EAS OpenAPI endpoint (default: ${EAS_ENDPOINT_ENV_VAR}, then pai-eas.<region>.aliyuncs.com, "
           "e.g. pai-eas-vpc.<region>.aliyuncs.com inside a VPC); http://host:port is taken as given."),
    Option("instance", "int", 1, "create, update", "Number of instances (metadata.instance)."),
    Option("cpu", "int", 2, "create, update", "vCPUs per instance (metadata.cpu)."),
    Option("memory", "int", 4000, "create, update", "Memory per instance in MB (metadata.memory)."),
    Option("batching", "bool", False, "create, update",
           "Server-side batching (metadata.rpc.batching)."),
    Option("max_batch_size", "int", None, "create, update",
           "metadata.rpc.max_batch_size (needs batching=true)."),
    Option("warm_up", "bool", True, "create, update, run-local",
           "Write the model's EAS warm-up request (`mlflow-eas-savedmodel warmup`), upload it and "
           "set warm_up_data_path; run-local replays it before serving."),
    Option("warm_up_signature", "str", None, "create, update, run-local",
           "SignatureDef the warm-up request runs (default: the model's default signature)."),
    Option("warm_up_count", "int", None, "create, update, run-local",
           "Times the warm-up request is replayed: metadata.rpc.warm_up_count_per_file on EAS "
           "(default: EAS's own), 1 in run-local."),
    Option("token", "str", None, "create, run-local",
           "Service token: at create, the token EAS sets for the service (default: EAS generates "
           "one); in run-local, requests without `Authorization: <token>` get 401, as on EAS "
           "(default: none needed; GET /ping never needs it). predict sends $EAS_SERVICE_TOKEN "
           "if set, else the service's AccessToken from DescribeService. Never written to MLflow "
           "tags."),
    Option("require_check", "bool", False, "create, update",
           "Refuse a model version without a passing check-runtime for the processor (its "
           "model-version tag eas.check.<processor> must start with 'passed')."),
    Option("timeout", "float", 1200.0, "create, update",
           "Seconds to wait for the service to reach Running."),
    Option("poll_interval", "float", 10.0, "create, update",
           "Seconds between two DescribeService calls while waiting."),
    Option("endpoint_type", "str", "internet", "create, update",
           "Which service endpoint create/update report as `endpoint` and record in the model-version "
           "tag: internet or intranet (get and predict use the internet endpoint)."),
    Option("host", "str", "127.0.0.1", "run-local",
           "Interface the local replica binds (0.0.0.0 exposes it to the network)."),
    Option("port", "int", 8080, "run-local", "TCP port of the local replica."),
)
_BY_KEY = {o.key: o for o in OPTIONS}
TOKEN_ENV_VAR = "EAS_SERVICE_TOKEN"


def _convert(option, raw):
    if raw is None or not isinstance(raw, str):
        return raw
    value = raw.strip()
    try:
        if option.kind == "int":
            number = int(value)
            if number < 1:
                raise ValueError
            return number
        if option.kind == "float":
            number = float(value)
            if not number > 0:
                raise ValueError
            return number
    except ValueError:
        raise invalid_parameter_value(
            f"-C {option.key}={raw!r} must be a positive {'integer' if option.kind == 'int' else 'number'}, "
            f"e.g. -C {option.key}={option.default or 1}."
        ) from None
    if option.kind == "bool":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise invalid_parameter_value(f"-C {option.key}={raw!r} must be true or false.")
    return value


def parse_options(config, target_uri=None):
    """``{key: value}`` of every option, converted, defaults filled in.

    Args:
        config: the ``-C`` dict (strings) or a Python dict (values already typed).
        target_uri: ``eas`` or ``eas:/<region>``; its region is the default ``region``.

    Raises:
        MlflowException: an unknown key (the message lists the known ones) or a bad value.
    """
    config = dict(config or {})
    unknown = sorted(k for k in config if k not in _BY_KEY)
    if unknown:
        raise invalid_parameter_value(
            f"Unknown -C option(s) {unknown} for the eas target. Known: {', '.join(_BY_KEY)} "
            "(see `mlflow deployments help -t eas`)."
        )
    options = {o.key: _convert(o, config.get(o.key, o.default)) for o in OPTIONS}
    if options["region"] is None:
        options["region"] = region_of_target(target_uri) or os.environ.get(REGION_ENV_VAR) or None
    options["eas_endpoint"] = options["eas_endpoint"] or os.environ.get(EAS_ENDPOINT_ENV_VAR) or None
    options["oss_endpoint"] = options["oss_endpoint"] or os.environ.get(OSS_ENDPOINT_ENV_VAR) or None
    if options["endpoint_type"] not in ("internet", "intranet"):
        raise invalid_parameter_value(
            f"-C endpoint_type={options['endpoint_type']!r} must be internet or intranet."
        )
    return options


def check_flavor(flavor):
    """Refuses a ``--flavor`` other than this package's (MLflow passes ``None`` when none is given)."""
    if flavor not in (None, FLAVOR):
        raise invalid_parameter_value(
            f"The eas target deploys the {FLAVOR} flavor only; got flavor {flavor!r}. "
            "Leave out --flavor."
        )


def region_of_target(target_uri):
    """``"cn-shanghai"`` of ``eas:/cn-shanghai`` (``None`` for plain ``eas``)."""
    if not target_uri or ":" not in target_uri:
        return None
    region = target_uri.split(":", 1)[1].strip("/")
    return region or None


def require(options, key, example):
    """The value of ``key``, or an error saying how to pass it."""
    value = options.get(key)
    if value in (None, ""):
        raise invalid_parameter_value(
            f"The eas target needs -C {key}=... here, e.g. -C {key}={example}."
        )
    return value


def require_region(options):
    if not options.get("region"):
        raise invalid_parameter_value(
            "No Alibaba Cloud region: pass -C region=cn-shanghai, use the target eas:/cn-shanghai, "
            f"or set ${REGION_ENV_VAR}."
        )
    return options["region"]


def split_oss_path(oss_path):
    """``(bucket, key prefix ending in '/' or '')`` of ``oss://bucket/prefix``."""
    match = _OSS_PATH_RE.match(oss_path or "")
    if not match:
        raise invalid_parameter_value(
            f"-C oss_path={oss_path!r} must be oss://<bucket>/<prefix>/ (bucket: 3-63 lowercase "
            "letters, digits and '-'), e.g. -C oss_path=oss://my-bucket/models/."
        )
    prefix = (match.group(2) or "").strip("/")
    return match.group(1), (prefix + "/" if prefix else "")


def options_help(width=100):
    """The option table ``target_help`` prints, wrapped to ``width`` columns."""
    import textwrap

    key_width = max(len(o.key) for o in OPTIONS) + 2
    lines = []
    for o in OPTIONS:
        shown = str(o.default).lower() if o.kind == "bool" else o.default
        default = "" if o.default is None else f" [default: {shown}]"
        lines.append(textwrap.fill(
            f"({o.used_by}) {o.help}{default}", width=width, initial_indent=f"  {o.key.ljust(key_width)}",
            subsequent_indent=" " * (key_width + 2),
        ))
    return "\n".join(lines)
