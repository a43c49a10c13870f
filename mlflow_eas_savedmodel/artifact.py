"""Opening a model: a model URI to its local folder, its MLmodel file and its :class:`FlavorConf`.

:func:`open_model` is the one way this package opens a model. It resolves ``runs:/...``,
``models:/<name>/<version>``, ``models:/<name>@<alias>`` and local paths (through MLflow's
artifact resolution, or through a given ``MlflowClient``'s stores), downloads the whole model or
only its MLmodel file, refuses the folder of a save that did not finish (its name holds
:data:`PARTIAL_MARK`, which :mod:`.save` writes) and gives the flavor's entry as a validated
:class:`~mlflow_eas_savedmodel.flavor_conf.FlavorConf`. The load path (:mod:`.load`), the EAS
commands (:mod:`.eas.mlmodel`) and promotion (:mod:`.registry`) open models through it.

It imports neither TensorFlow nor MLflow's pyfunc.
"""

import dataclasses
import functools
import os
import tempfile

from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.flavor_conf import FLAVOR_NAME, FlavorConf

# The name of a save in progress: save_model writes into ".<name>.partial-XXXX" beside the target.
PARTIAL_MARK = ".partial-"
MLMODEL_FILE = "MLmodel"


@dataclasses.dataclass(frozen=True)
class OpenedModel:
    """A model :func:`open_model` opened.

    Attributes:
        path: its local folder (``None`` when only the MLmodel file was read).
        mlmodel: its ``mlflow.models.Model``.
        where: the model as the user named it (path or URI), for the messages.
    """

    path: str | None
    mlmodel: object
    where: str

    @property
    def is_this_flavor(self):
        """Whether this flavor saved it (``eas_savedmodel`` in its MLmodel file)."""
        return FLAVOR_NAME in (self.mlmodel.flavors or {})

    @functools.cached_property
    def conf(self):
        """The validated :class:`FlavorConf`; raises when another flavor saved the model."""
        return FlavorConf.read(self.mlmodel, self.where)


def open_model(model_uri, dst_path=None, *, mlmodel_only=False, client=None, unreadable=None):
    """Opens the model at ``model_uri``.

    Args:
        model_uri: a local folder, ``runs:/<run_id>/<path>``, ``models:/<name>/<version>`` or
            ``models:/<name>@<alias>``.
        dst_path: where to download a remote model (default: a temporary folder); a local
            folder is used in place.
        mlmodel_only: read the MLmodel file alone (MLflow fetches just that file of a remote
            model), for readers of the metadata.
        client: an ``mlflow.MlflowClient`` whose stores a ``models:/`` URI is resolved against
            (default: MLflow's global tracking and registry URIs).
        unreadable: ``error -> MlflowException`` for an MLmodel file that does not parse
            (default: "Cannot read the MLmodel file of ...: Download or copy the model again.").

    Returns:
        An :class:`OpenedModel`; its ``conf`` is read when first asked for.

    Raises:
        MlflowException: the folder of an unfinished save, or an unreadable MLmodel file.
    """
    where = os.fspath(model_uri)
    unreadable = unreadable or functools.partial(_unreadable, where)
    if mlmodel_only:
        if os.path.isdir(where):
            refuse_unfinished(where)
        if client is None:  # MLflow's Model.load fetches only the MLmodel file of a remote URI
            return OpenedModel(None, _load_mlmodel(where, unreadable), where)
        with tempfile.TemporaryDirectory() as tmp:
            path = download(where, tmp, client=client, relative_path=MLMODEL_FILE)
            return OpenedModel(None, _load_mlmodel(path, unreadable), where)
    local = download(where, dst_path, client=client)
    refuse_unfinished(local)
    return OpenedModel(local, _load_mlmodel(local, unreadable), where)


def download(model_uri, dst_path=None, *, client=None, relative_path=None):
    """The local copy of ``model_uri`` (or of ``relative_path`` inside it); a local path in place.

    With ``client``, a ``models:/`` URI is resolved through the client's registry (a
    ``models:/`` URI alone would be resolved against the global registry URI, not the client's).
    """
    from mlflow.utils.uri import append_to_uri_path

    if client is None:
        from mlflow.tracking.artifact_utils import _download_artifact_from_uri

        uri = append_to_uri_path(model_uri, relative_path) if relative_path else model_uri
        return _download_artifact_from_uri(artifact_uri=uri, output_path=dst_path)
    from mlflow.artifacts import download_artifacts
    from mlflow_eas_savedmodel.registry_tags import registered_version

    target = registered_version(model_uri, client)
    location = (
        client.get_model_version_download_uri(target.name, target.version) if target else model_uri
    )
    return download_artifacts(
        artifact_uri=append_to_uri_path(location, relative_path) if relative_path else location,
        dst_path=dst_path,
        tracking_uri=client.tracking_uri,
        registry_uri=getattr(client, "_registry_uri", None),
    )


def refuse_unfinished(model_path):
    """A ``.<name>.partial-*`` folder is a save that was killed: never load it as a model."""
    name = os.path.basename(os.path.normpath(model_path))
    if name.startswith(".") and PARTIAL_MARK in name:
        raise invalid_parameter_value(
            f"{model_path!r} is the temporary folder of a save_model that did not finish (the "
            "process was killed): it is not a model. Delete it and save the model again."
        )


def _load_mlmodel(path, unreadable):
    from mlflow.models import Model

    try:
        return Model.load(path)
    except Exception as e:  # noqa: BLE001 - MLflow raises MlflowException, OSError, YAMLError
        raise unreadable(e) from e


def _unreadable(where, error):
    return invalid_parameter_value(
        f"Cannot read the MLmodel file of {where!r}: {error}. Download or copy the model again."
    )
