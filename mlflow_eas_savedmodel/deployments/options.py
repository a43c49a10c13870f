"""The ``-C key=value`` options of the ``eas`` deployment target: one table, parsed and documented.

``mlflow deployments ... -C key=value`` hands every value over as a string; :func:`parse_options`
checks the keys against :data:`OPTIONS` (an unknown key is an error listing the known ones),
converts the values, fills in defaults and refuses combinations EAS or alipai would not take,
:func:`service_fields` writes each option's value into the field of the EAS service description
its row names (``Option.field``, e.g. ``metadata.gpu``), and :func:`options_help` writes the table
that ``mlflow deployments help -t eas`` prints, field included: what is accepted, what is sent and
what is documented are the same list.

The fields are the ones Alibaba's PAI Python SDK (``alipai`` 0.4.13, ``pai/model/_model.py``
``ModelBase._build_service_config``) writes for the same deployment: ``metadata.instance``;
``metadata.cpu``/``memory``/``gpu``/``gpu_memory`` from a ``ResourceConfig``, or instead
``cloud.computing.instance_type`` (alipai refuses both at once); ``metadata.resource`` for a
dedicated resource group.

GPU processors: a ``tensorflow_gpu_*`` processor needs a GPU, stated by ``-C gpu=N`` (whole GPUs),
``-C gpu_memory=GB`` (a share of one) or a GPU instance type. An instance type counts as a GPU one
when its ECS family (the part after ``ecs.`` up to the first ``-`` or ``.``) starts with ``gn``
(``ecs.gn6i-c4g1.xlarge``, ``ecs.gn7i-c8g1.2xlarge``), ``ebmgn`` (bare-metal GPU), ``vgn`` or ``sgn``
(virtual GPU): :data:`GPU_INSTANCE_FAMILY_PREFIXES`. Any other name (a new family, PAI's ``ml.*``
types) is taken as CPU-only unless ``-C gpu=N`` says otherwise.

This module imports neither TensorFlow nor Alibaba Cloud's SDKs.
"""

import dataclasses
import os
import re

from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.flavor_conf import FLAVOR_NAME

REGION_ENV_VAR = "ALIBABA_CLOUD_REGION_ID"
# get/list/predict take no -C options in MLflow's CLI: endpoints also come from the environment.
EAS_ENDPOINT_ENV_VAR = "MLFLOW_EAS_ENDPOINT"
OSS_ENDPOINT_ENV_VAR = "MLFLOW_EAS_OSS_ENDPOINT"
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_OSS_PATH_RE = re.compile(r"^oss://([a-z0-9][a-z0-9-]{1,61}[a-z0-9])(/.*)?$")
GPU_PROCESSOR_PREFIX = "tensorflow_gpu_"
# ECS's GPU instance families: gn* (gn5, gn6i, gn7i, ...), bare-metal ebmgn*, virtual-GPU vgn*/sgn*.
GPU_INSTANCE_FAMILY_PREFIXES = ("gn", "ebmgn", "vgn", "sgn")
_INSTANCE_TYPE_RE = re.compile(r"^ecs\.([a-z0-9]+)[-.]")
DEFAULT_EAS_HOST = "pai-eas.{region}.aliyuncs.com"
VPC_EAS_HOST = "pai-eas-manage-vpc.{region}.aliyuncs.com"


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``-C`` key: its type, default, which commands read it, and its help line."""

    key: str
    kind: str  # "str", "int", "float" or "bool"
    default: object
    used_by: str  # e.g. "create, update"
    help: str
    field: str = None  # where create/update put the value in the EAS service description
    zero_ok: bool = False  # numbers must be > 0, or >= 0 (0 switches a wait off)


OPTIONS = (
    Option("processor", "str", None, "create, update, run-local",
           "EAS processor code, e.g. tensorflow_cpu_1.15 (required); must be one of the model's "
           "eas_processors (`mlflow-eas-savedmodel inspect`). A tensorflow_gpu_* processor needs -C gpu, "
           "-C gpu_memory or a GPU -C instance_type."),
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
           f"EAS OpenAPI endpoint (default: ${EAS_ENDPOINT_ENV_VAR}, then "
           f"{DEFAULT_EAS_HOST.format(region='<region>')} in every region, as alipai dials; inside a VPC "
           f"{VPC_EAS_HOST.format(region='<region>')}); http://host:port is taken as given."),
    Option("instance", "int", 1, "create, update", "Number of instances.", field="metadata.instance"),
    Option("cpu", "int", 2, "create, update",
           "vCPUs per instance (not with -C instance_type, which fixes it).", field="metadata.cpu"),
    Option("memory", "int", 4000, "create, update",
           "Memory per instance in MB (not with -C instance_type).", field="metadata.memory"),
    Option("gpu", "int", None, "create, update",
           "Whole GPUs per instance, in a dedicated resource group (-C resource_group) with GPU "
           "machines; with -C instance_type it states that the type has GPUs.", field="metadata.gpu"),
    Option("gpu_memory", "int", None, "create, update",
           "GPU memory per instance in GB, instances sharing a GPU (dedicated resource group; not "
           "with -C gpu, which takes whole GPUs).", field="metadata.gpu_memory"),
    Option("instance_type", "str", None, "create, update",
           "ECS instance type of each instance, e.g. ecs.c6.xlarge or ecs.gn6i-c4g1.xlarge (GPU: "
           "families gn*, ebmgn*, vgn*, sgn*); replaces -C cpu/memory/gpu_memory.",
           field="cloud.computing.instance_type"),
    Option("resource_group", "str", None, "create, update",
           "Dedicated resource group id, e.g. eas-r-abc123 (default: EAS's public resource group).",
           field="metadata.resource"),
    Option("batching", "bool", False, "create, update", "Server-side batching.", field="metadata.rpc.batching"),
    Option("max_batch_size", "int", None, "create, update", "Largest server-side batch (needs batching=true).",
           field="metadata.rpc.max_batch_size"),
    Option("warm_up", "bool", True, "create, update, run-local",
           "Write the model's EAS warm-up request (`mlflow-eas-savedmodel warmup`), upload it and "
           "set warm_up_data_path; run-local replays it before serving."),
    Option("warm_up_signature", "str", None, "create, update, run-local",
           "SignatureDef the warm-up request runs (default: the model's default signature)."),
    Option("warm_up_count", "int", None, "create, update, run-local",
           "Times the warm-up request is replayed (default: EAS's own; 1 in run-local).",
           field="metadata.rpc.warm_up_count_per_file"),
    Option("token", "str", None, "create, run-local",
           "Service token: at create, the token EAS sets for the service (default: EAS generates "
           "one); in run-local, requests without `Authorization: <token>` get 401, as on EAS "
           "(default: none needed; GET /ping never needs it). predict sends $EAS_SERVICE_TOKEN "
           "if set, else the service's AccessToken from DescribeService. Never written to MLflow "
           "tags.", field="token"),
    Option("require_check", "bool", False, "create, update",
           "Refuse a model version without a passing check-runtime for the processor (its "
           "model-version tag eas.check.<processor> must start with 'passed')."),
    Option("timeout", "float", 1200.0, "create, update",
           "Seconds to wait for the service to reach Running."),
    Option("poll_interval", "float", 10.0, "create, update",
           "Seconds between two DescribeService calls while waiting."),
    Option("gateway_timeout", "float", 120.0, "create, update",
           "Seconds to wait, once Running, until the service's endpoint stops answering 503 "
           "'no healthy upstream' to a GET with the token (alipai waits up to 60 x 2 s); 0 skips it.",
           zero_ok=True),
    Option("gateway_interval", "float", 2.0, "create, update",
           "Seconds between two gateway GETs while waiting."),
    Option("endpoint_type", "str", "internet", "create, update",
           "Which service endpoint create/update report as `endpoint`, record in the model-version "
           "tag and wait on for the gateway: internet or intranet (get and predict use the internet "
           "endpoint)."),
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
            if number < (0 if option.zero_ok else 1):
                raise ValueError
            return number
        if option.kind == "float":
            number = float(value)
            if not (number >= 0 if option.zero_ok else number > 0):
                raise ValueError
            return number
    except ValueError:
        what = "integer" if option.kind == "int" else "number"
        raise invalid_parameter_value(
            f"-C {option.key}={raw!r} must be a {'non-negative' if option.zero_ok else 'positive'} "
            f"{what}, e.g. -C {option.key}={option.default or 1}."
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
        MlflowException: an unknown key (the message lists the known ones), a bad value, or a
            combination of resource options EAS does not take (see :func:`_check_resources`).
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
    if options["max_batch_size"] is not None and not options["batching"]:
        raise invalid_parameter_value(
            f"-C max_batch_size={options['max_batch_size']} only applies with server-side batching: "
            "add -C batching=true."
        )
    _check_resources(options, given={k for k in config if config[k] is not None})
    return options


def _check_resources(options, given):
    """Refuses what alipai's ``_build_service_config`` refuses or documents as not taking effect.

    With ``instance_type`` the instance type fixes vCPUs and memory (``cpu``/``memory`` are then
    left out of the request, as alipai does; passing them is an error). GPUs outside an instance
    type need a dedicated resource group (alipai's ResourceConfig: "The public resource group does
    not support requesting GPU resources"). ``gpu_memory`` is ignored by EAS next to a whole GPU.
    """
    if options["instance_type"]:
        clash = [k for k in ("cpu", "memory", "gpu_memory") if k in given]
        if clash:
            raise invalid_parameter_value(
                f"-C instance_type={options['instance_type']} fixes each instance's resources; leave out "
                + " ".join(f"-C {k}" for k in clash)
                + " (or drop -C instance_type and size the instances with -C cpu/memory"
                + (" in a -C resource_group" if "gpu_memory" in clash else "") + ")."
            )
        options["cpu"] = options["memory"] = None
    elif (options["gpu"] is not None or options["gpu_memory"] is not None) and not options["resource_group"]:
        asked = "gpu" if options["gpu"] is not None else "gpu_memory"
        raise invalid_parameter_value(
            f"-C {asked}={options[asked]} needs a dedicated resource group with GPU machines: EAS's "
            "public resource group takes GPUs only through an instance type. Add "
            "-C resource_group=<eas-r-... id>, or use -C instance_type=ecs.gn6i-c4g1.xlarge (a GPU "
            "instance type) instead."
        )
    if options["gpu"] and options["gpu_memory"] is not None:
        raise invalid_parameter_value(
            f"-C gpu_memory={options['gpu_memory']} does not take effect with -C gpu={options['gpu']}: each "
            "instance gets whole GPUs. Leave out -C gpu_memory, or leave out -C gpu to share GPUs with "
            f"-C gpu_memory={options['gpu_memory']} GB per instance."
        )


def is_gpu_instance_type(instance_type):
    """Whether ``instance_type`` (``ecs.gn6i-c4g1.xlarge``) is of an ECS GPU family (module docstring)."""
    match = _INSTANCE_TYPE_RE.match((instance_type or "").strip().lower())
    return bool(match) and match.group(1).startswith(GPU_INSTANCE_FAMILY_PREFIXES)


def check_gpu(options):
    """Refuses a ``tensorflow_gpu_*`` processor with neither ``-C gpu`` nor a GPU instance type."""
    processor = options.get("processor") or ""
    if not processor.startswith(GPU_PROCESSOR_PREFIX):
        return
    if options["gpu"] is not None or options["gpu_memory"] is not None:
        return
    if options["instance_type"] and is_gpu_instance_type(options["instance_type"]):
        return
    cpu_twin = "tensorflow_cpu_" + processor[len(GPU_PROCESSOR_PREFIX):]
    if options["instance_type"]:
        got = (f"-C instance_type={options['instance_type']} is not of a GPU family "
               f"({', '.join(p + '*' for p in GPU_INSTANCE_FAMILY_PREFIXES)})")
        fix = ("pass a GPU instance type such as -C instance_type=ecs.gn6i-c4g1.xlarge, add -C gpu=1 if "
               "this type does have a GPU")
    else:
        got = "no -C gpu and no -C instance_type were given"
        fix = ("pass -C instance_type=ecs.gn6i-c4g1.xlarge (a GPU instance type), or -C gpu=1 "
               "-C resource_group=<eas-r-... id> for a dedicated resource group with GPU machines")
    raise invalid_parameter_value(
        f"Processor {processor} runs on a GPU, but {got}. Either {fix}, or deploy on CPU with "
        f"-C processor={cpu_twin}."
    )


def service_fields(options):
    """``{dotted field: value}`` of every option that has a ``field`` and a value to send.

    ``False`` and ``None`` are not sent (EAS's defaults apply), as alipai leaves out what it was
    not given. ``warm_up_count`` only goes with a warm-up file.
    """
    fields = {}
    for o in OPTIONS:
        value = options.get(o.key)
        if o.field is None or value is None or value is False:
            continue
        if o.key == "warm_up_count" and not options["warm_up"]:
            continue
        fields[o.field] = value
    return fields


def apply_fields(service_json, fields):
    """Writes ``{"metadata.rpc.batching": True}``-style fields into ``service_json`` (in place)."""
    for dotted, value in fields.items():
        *parents, leaf = dotted.split(".")
        node = service_json
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return service_json


def check_flavor(flavor):
    """Refuses a ``--flavor`` other than this package's (MLflow passes ``None`` when none is given)."""
    if flavor not in (None, FLAVOR_NAME):
        raise invalid_parameter_value(
            f"The eas target deploys the {FLAVOR_NAME} flavor only; got flavor {flavor!r}. "
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
        field = f" Sent as {o.field}." if o.field else ""
        lines.append(textwrap.fill(
            f"({o.used_by}) {o.help}{field}{default}", width=width, initial_indent=f"  {o.key.ljust(key_width)}",
            subsequent_indent=" " * (key_width + 2),
        ))
    return "\n".join(lines)
