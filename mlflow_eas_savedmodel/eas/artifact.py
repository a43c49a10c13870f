"""A model URI's MLmodel metadata and files, read without TensorFlow.

``inspect``, ``eas-config`` and the input preparation of the other commands only need the
flavor's metadata; :func:`load_flavor_metadata` downloads the MLmodel file alone (MLflow's
``Model.load`` fetches just that file for remote URIs), so they stay fast on large models.
"""

import os

from mlflow.models import Model
from mlflow.tracking.artifact_utils import _download_artifact_from_uri

from mlflow_eas_savedmodel.errors import invalid

FLAVOR_NAME = "eas_savedmodel"  # same as flavor.FLAVOR_NAME; flavor.py imports MLflow's pyfunc
CUSTOM_OBJECTS_FILE = "custom_objects.cloudpickle"  # flavor.CUSTOM_OBJECTS_FILE
CUSTOM_OBJECTS_SHA256 = "custom_objects_sha256"
_FLAVOR_KEYS = {  # key: (types, required)
    "saved_model_dir": (str, True),
    "signature_defs": (dict, True),
    "default_signature": (str, True),
    "file_sha256": (dict, False),
    "eas_processors": (list, False),
    "custom_objects": (str, False),
    CUSTOM_OBJECTS_SHA256: (str, False),
    "allow_file_ops": (bool, False),
}


def load_flavor_metadata(model_uri):
    """The ``(mlflow.models.Model, flavor configuration dict)`` of ``model_uri``.

    Raises an ``MlflowException`` naming the model's flavors when this flavor did not save it.
    """
    try:
        mlmodel = Model.load(model_uri)
    except Exception as e:  # noqa: BLE001 - MLflow raises MlflowException or OSError here
        raise invalid(
            f"Cannot read the MLmodel file of {model_uri!r}: {e}. Pass a model folder, "
            "runs:/<run_id>/<path>, models:/<name>/<version> or models:/<name>@<alias>."
        ) from e
    return mlmodel, flavor_conf_of(mlmodel, model_uri)


def flavor_conf_of(mlmodel, model_uri):
    """This flavor's configuration in ``mlmodel``, or an error naming the flavors it has."""
    conf = mlmodel.flavors.get(FLAVOR_NAME)
    if conf is None:
        raise invalid(
            f"The model at {model_uri!r} was not saved by mlflow_eas_savedmodel (its flavors: "
            f"{sorted(mlmodel.flavors) or 'none'}). Save it with "
            "mlflow_eas_savedmodel.log_model(...) first."
        )
    return validate_flavor_conf(conf, model_uri)


def validate_flavor_conf(conf, model_uri):
    """``conf`` after checking every key this package reads has the type it writes.

    A damaged or hand-edited MLmodel file (a key removed, a list where a mapping belongs, a
    ``saved_model_dir`` or ``custom_objects`` pointing elsewhere) fails here with the key's name
    instead of a ``KeyError``/``TypeError`` deep inside a load.
    """
    def damaged(problem):
        return invalid(
            f"The MLmodel file of {model_uri!r} is damaged: {problem}. Download or copy the model "
            "again, or re-log it with mlflow_eas_savedmodel.log_model."
        )

    if not isinstance(conf, dict):
        raise damaged(f"the {FLAVOR_NAME!r} flavor is a {type(conf).__name__}, not a mapping")
    for key, (kind, required) in _FLAVOR_KEYS.items():
        if key not in conf:
            if required:
                raise damaged(f"the key {FLAVOR_NAME}.{key} is missing")
            continue
        if not isinstance(conf[key], kind):
            raise damaged(
                f"{FLAVOR_NAME}.{key} is a {type(conf[key]).__name__}, not a {kind.__name__}"
            )
    directory = conf["saved_model_dir"]
    if not directory or os.path.isabs(directory) or any(c in directory for c in "/\\") or directory == "..":
        raise damaged(f"{FLAVOR_NAME}.saved_model_dir {directory!r} is not a folder name inside the model")
    if "custom_objects" in conf and conf["custom_objects"] != CUSTOM_OBJECTS_FILE:
        raise damaged(
            f"{FLAVOR_NAME}.custom_objects is {conf['custom_objects']!r}; this package only ever "
            f"writes {CUSTOM_OBJECTS_FILE!r}"
        )
    signatures = conf["signature_defs"]
    if conf["default_signature"] not in signatures:
        raise damaged(
            f"{FLAVOR_NAME}.default_signature {conf['default_signature']!r} is not one of "
            f"{FLAVOR_NAME}.signature_defs {sorted(map(str, signatures))}"
        )
    for name, signature in signatures.items():
        for side in ("inputs", "outputs"):
            tensors = signature.get(side) if isinstance(signature, dict) else None
            if not isinstance(tensors, dict) or not all(
                isinstance(t, dict) and isinstance(t.get("dtype"), str) and "shape" in t
                for t in tensors.values()
            ):
                raise damaged(
                    f"{FLAVOR_NAME}.signature_defs.{name}.{side} is not a mapping of tensors "
                    "(dtype, shape, name)"
                )
    return conf


def download_model(model_uri, dst_path=None):
    """``(local model folder, Model, flavor conf)``; a local path is used in place."""
    local = _download_artifact_from_uri(artifact_uri=model_uri, output_path=dst_path)
    try:
        mlmodel = Model.load(local)
    except Exception as e:  # noqa: BLE001 - MLflow raises MlflowException, OSError, YAMLError
        raise invalid(
            f"Cannot read the MLmodel file of {model_uri!r}: {e}. Download or copy the model again."
        ) from e
    return local, mlmodel, flavor_conf_of(mlmodel, model_uri)


def saved_model_dir(local_model_path, conf):
    """The SavedModel folder inside a downloaded model."""
    return os.path.join(local_model_path, conf["saved_model_dir"])
