"""A model URI's MLmodel file (and, when asked, its files), read without TensorFlow.

``inspect``, ``eas-config`` and the input preparation of the other commands only need the
flavor's metadata; :func:`load_flavor_metadata` downloads the MLmodel file alone (MLflow's
``Model.load`` fetches just that file for remote URIs), so they stay fast on large models.
:func:`download_model` fetches the whole model for the commands that read the SavedModel. Both
open it with :func:`~mlflow_eas_savedmodel.artifact.open_model` and give the flavor's entry as a
validated :class:`~mlflow_eas_savedmodel.flavor_conf.FlavorConf`.
On a ``models:/`` URI both also give the registered version its ``eas.*`` tags if it lacks them
(registered with ``mlflow.register_model`` or the UI, see
:func:`~mlflow_eas_savedmodel.registry_tags.ensure_version_tags`).
"""

from mlflow_eas_savedmodel.artifact import open_model
from mlflow_eas_savedmodel.errors import invalid_parameter_value


def load_flavor_metadata(model_uri):
    """The ``(mlflow.models.Model, FlavorConf)`` of ``model_uri``.

    Raises an ``MlflowException`` naming the model's flavors when this flavor did not save it.
    """
    model = open_model(model_uri, mlmodel_only=True, unreadable=lambda e: invalid_parameter_value(
        f"Cannot read the MLmodel file of {model_uri!r}: {e}. Pass a model folder, "
        "runs:/<run_id>/<path>, models:/<name>/<version> or models:/<name>@<alias>."
    ))
    return model.mlmodel, _tagged(model_uri, model.conf)


def download_model(model_uri, dst_path=None):
    """``(local model folder, Model, FlavorConf)``; a local path is used in place."""
    model = open_model(model_uri, dst_path)
    return model.path, model.mlmodel, _tagged(model_uri, model.conf)


def _tagged(model_uri, conf):
    from mlflow_eas_savedmodel.registry_tags import ensure_version_tags

    ensure_version_tags(model_uri, conf)
    return conf
