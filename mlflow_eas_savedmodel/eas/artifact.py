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
    return conf


def download_model(model_uri, dst_path=None):
    """``(local model folder, Model, flavor conf)``; a local path is used in place."""
    local = _download_artifact_from_uri(artifact_uri=model_uri, output_path=dst_path)
    mlmodel = Model.load(local)
    return local, mlmodel, flavor_conf_of(mlmodel, model_uri)


def saved_model_dir(local_model_path, conf):
    """The SavedModel folder inside a downloaded model."""
    return os.path.join(local_model_path, conf["saved_model_dir"])
