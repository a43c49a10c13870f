"""``eas-config``: the EAS service JSON for a model, refusing processors it cannot run on.

The keys follow EAS's service description (``eascmd create service.json``): ``name``,
``processor``, ``model_path``, ``warm_up_data_path`` and ``metadata`` with ``instance``,
``cpu`` and ``memory`` (MB). Server-side batching is ``metadata.rpc.batching`` and
``metadata.rpc.max_batch_size``, written as a nested ``rpc`` object as in EAS's examples
(``"rpc": {"keepalive": ...}``).
"""

import re

from mlflow_eas_savedmodel.eas.mlmodel import load_flavor_metadata
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.runtimes import processor_version

# EAS service names: lowercase letters, digits and underscores, starting with a letter.
_SERVICE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,127}$")
_MODEL_PATH_RE = re.compile(r"^(oss://|https?://)")


def service_name_from(model_uri):
    """A valid EAS service name derived from a model URI (``models:/My-Model/3`` -> ``my_model_3``)."""
    tail = re.sub(r"^[a-z]+:/+", "", model_uri.lower())
    name = re.sub(r"[^a-z0-9]+", "_", tail).strip("_") or "model"
    return ("m_" + name if not name[0].isalpha() else name)[:128]


def check_processor(conf, processor, model_uri):
    """The runtime version of ``processor``; refuses one the model's ``eas_processors`` lack."""
    version = processor_version(processor)  # an unknown code is an error listing the known
    compatible = list(conf.eas_processors)
    if processor not in compatible:
        reasons = conf.eas_incompatibilities.get(version)
        raise invalid_parameter_value(
            f"The model {model_uri!r} is not compatible with EAS processor {processor!r}"
            + (f" ({'; '.join(reasons)})" if reasons else "")
            + f". Use one of: {', '.join(compatible) or 'none'}."
        )
    return version


def service_config(
    model_uri,
    processor,
    model_path,
    warm_up_data_path=None,
    name=None,
    instance=1,
    cpu=2,
    memory=4000,
    batching=False,
    max_batch_size=None,
):
    """The EAS service description (a dict ready for ``json.dump``) of ``model_uri``.

    Refuses a ``processor`` that is not among the model's recorded ``eas_processors``.

    Example:
        >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
        >>> image = keras.Input((4,), name="image")
        >>> keras_model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
        >>> mes.save_model(keras_model, "model", input_example=np.ones((2, 4), "float32"))
        >>> from mlflow_eas_savedmodel.eas.service_config import service_config
        >>> service_config("model", "tensorflow_cpu_1.15", "oss://bucket/mnist/", name="mnist")
        {'name': 'mnist', 'processor': 'tensorflow_cpu_1.15', 'model_path': 'oss://bucket/mnist/',
         'metadata': {'instance': 1, 'cpu': 2, 'memory': 4000}}
    """
    _, conf = load_flavor_metadata(model_uri)
    check_processor(conf, processor, model_uri)
    if not _MODEL_PATH_RE.match(model_path):
        raise invalid_parameter_value(
            f"model_path {model_path!r} must be an oss:// or http(s):// URL (the folder or "
            "archive written by `mlflow-eas-savedmodel export`), e.g. oss://bucket/models/mnist/."
        )
    if warm_up_data_path is not None and not _MODEL_PATH_RE.match(warm_up_data_path):
        raise invalid_parameter_value(
            f"warm_up_data_path {warm_up_data_path!r} must be an oss:// or http(s):// URL of a "
            "warm-up .bin written by `mlflow-eas-savedmodel warmup`."
        )
    name = name or service_name_from(model_uri)
    if not _SERVICE_NAME_RE.match(name):
        raise invalid_parameter_value(
            f"Service name {name!r} is not valid on EAS: use lowercase letters, digits and "
            "underscores, starting with a letter (e.g. 'mnist_v3')."
        )
    for label, value in (("instance", instance), ("cpu", cpu), ("memory", memory)):
        if value is None or int(value) < 1:
            raise invalid_parameter_value(f"{label} must be a positive integer; got {value!r}.")
    if max_batch_size is not None and not batching:
        raise invalid_parameter_value(
            "max_batch_size only applies with batching: pass --batching as well."
        )
    if max_batch_size is not None and int(max_batch_size) < 1:
        raise invalid_parameter_value(
            f"max_batch_size must be a positive integer; got {max_batch_size!r}."
        )

    config = {"name": name, "processor": processor, "model_path": model_path}
    if warm_up_data_path:
        config["warm_up_data_path"] = warm_up_data_path
    metadata = {"instance": int(instance), "cpu": int(cpu), "memory": int(memory)}
    if batching:
        metadata["rpc"] = {"batching": True}
        if max_batch_size is not None:
            metadata["rpc"]["max_batch_size"] = int(max_batch_size)
    config["metadata"] = metadata
    return config
