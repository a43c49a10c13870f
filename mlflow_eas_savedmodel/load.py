"""Loading: ``load_model`` and :func:`load_handle`, the checks every load runs first.

Both ``load_model`` and ``mlflow.pyfunc.load_model`` (through :mod:`.pyfunc`) end in
:func:`load_handle`, which refuses, before TensorFlow reads anything: a ``.partial-`` folder (a
save that was killed), a SavedModel folder other than the one MLmodel names, symlinks, files that
do not match their recorded SHA-256 (unless the check is skipped), a graph with file or Python
ops (:mod:`.graph.ops_policy`) and a custom-objects pickle that does not match its SHA-256.
The custom objects are unpickled only when something asks for them
(:attr:`.model.EasSavedModel.custom_objects`; ``load_model`` gives them back): the frozen graph
never needs them. Saving is in :mod:`.save`; the flavor's MLmodel entry in :mod:`.flavor_conf`.
"""

import os

from mlflow.models import Model
from mlflow.tracking.artifact_utils import _download_artifact_from_uri

from mlflow_eas_savedmodel import integrity
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.flavor_conf import CUSTOM_OBJECTS_FILE, FLAVOR_NAME, FlavorConf, not_this_flavor
from mlflow_eas_savedmodel.graph import ops_policy
from mlflow_eas_savedmodel.save import PARTIAL_MARK


def load_model(model_uri, device=None, dst_path=None, verify_integrity=None):
    """Loads a model saved by this flavor as an :class:`~mlflow_eas_savedmodel.model.EasSavedModel`.

    Args:
        model_uri: ``runs:/...``, ``models:/name/1``, ``models:/name@alias`` or a local path.
        device: ``"cpu"``, ``"gpu"``, ``"/GPU:1"``... or ``None`` for
            ``$MLFLOW_DEFAULT_PREDICTION_DEVICE``, else a GPU if one is visible, else the CPU.
        dst_path: where to download the model (default: a temporary folder).
        verify_integrity: check every SavedModel file against the SHA-256 recorded at save time
            and fail on a changed, truncated, missing or extra file, or when no hashes are
            recorded. ``None`` means on unless ``$MLFLOW_EAS_SAVEDMODEL_VERIFY=0``; pass
            ``False`` to skip hashing very large models. Whatever it says, a load refuses
            symlinks, a ``.partial-`` folder, a damaged MLmodel, a graph with file or Python ops
            and a custom-objects pickle that does not match its recorded SHA-256.

    Example:
        >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
        >>> image = keras.Input((4,), name="image")
        >>> mes.save_model(keras.Model(image, keras.layers.Dense(3, name="scores")(image)), "model")
        >>> handle = mes.load_model("model", device="cpu")
        >>> handle.signatures["serving_default"]["inputs"]["image"]["shape"]
        [-1, 4]
        >>> handle.predict({"image": np.ones((2, 4), "float32")})["scores"].shape
        (2, 3)
    """
    local_path = _download_artifact_from_uri(artifact_uri=model_uri, output_path=dst_path)
    _refuse_unfinished(local_path)
    conf = _read_conf(local_path)
    handle = load_handle(
        conf.saved_model_path(local_path), device=device, verify_integrity=verify_integrity, conf=conf
    )
    # load_model gives the custom objects back: an unpicklable file fails here, at load.
    handle.custom_objects  # noqa: B018
    return handle


def load_handle(saved_model_dir, device=None, verify_integrity=None, conf=None):
    """The :class:`~mlflow_eas_savedmodel.model.EasSavedModel` of a model's SavedModel folder.

    Args:
        saved_model_dir: the SavedModel folder inside a model folder (what ``mlflow.pyfunc``
            hands :func:`.pyfunc._load_pyfunc`).
        device, verify_integrity: as in :func:`load_model`.
        conf: the model's :class:`~.flavor_conf.FlavorConf` when the caller has read it.
    """
    from mlflow_eas_savedmodel.model import EasSavedModel

    model_path = os.path.dirname(os.path.abspath(saved_model_dir))
    _refuse_unfinished(model_path)
    conf = conf or _read_conf(model_path)
    if os.path.abspath(saved_model_dir) != conf.saved_model_path(model_path):
        raise invalid_parameter_value(
            f"{saved_model_dir!r} is not the SavedModel folder {conf.saved_model_dir!r} that "
            "the model's MLmodel file names. Download or copy the model again."
        )
    # Symlinks first, always: hashing follows them, so a link would pass for an inside file.
    integrity.refuse_symlinks(model_path)
    if integrity.should_verify(verify_integrity):
        conf.verify_files(
            saved_model_dir,
            unrecorded=f"The MLmodel file of {model_path!r} records no file hashes "
            f"({FLAVOR_NAME}.file_sha256), so its SavedModel cannot be checked. Re-log the model, "
            f"or load a model you trust with verify_integrity=False (or {integrity.VERIFY_ENV}=0).",
        )
    _check_artifact_graph(saved_model_dir, conf)
    return EasSavedModel(
        saved_model_dir,
        conf.signature_defs,
        conf.default_signature,
        device=device,
        custom_objects=_custom_objects_loader(model_path, conf),
    )


def _read_conf(model_path):
    try:
        mlmodel = Model.load(model_path)
    except Exception as e:  # noqa: BLE001 - MLflow raises MlflowException or OSError here
        raise not_this_flavor(model_path, {}) from e
    return FlavorConf.read(mlmodel, model_path)


def _refuse_unfinished(model_path):
    """A ``.<name>.partial-*`` folder is a save that was killed: never load it as a model."""
    name = os.path.basename(os.path.normpath(model_path))
    if name.startswith(".") and PARTIAL_MARK in name:
        raise invalid_parameter_value(
            f"{model_path!r} is the temporary folder of a save_model that did not finish (the "
            "process was killed): it is not a model. Delete it and save the model again."
        )


def _check_artifact_graph(saved_model_dir, conf):
    """The ops policy again, on the artifact's own graph, before TensorFlow loads it.

    The save checked the graph already; this catches an artifact whose ``saved_model.pb`` was
    replaced (with its hashes, or with the check skipped) by one that reads files or runs Python.
    """
    from mlflow_eas_savedmodel.sources import assets
    from mlflow_eas_savedmodel.sources.saved_model import read_saved_model

    meta_graphs = read_saved_model(saved_model_dir).meta_graphs
    what = f"The SavedModel of the model at {os.path.dirname(saved_model_dir)!r}"
    for meta_graph in meta_graphs:
        ops_policy.check_meta_graph(
            meta_graph, what, assets.check_assets(meta_graph, saved_model_dir),
            allow_file_ops=conf.allow_file_ops is True,
            outcome="it was not loaded", allow_ops=conf.allow_ops, artifact=True,
        )


def _custom_objects_loader(model_path, conf):
    """``None``, or what unpickles ``custom_objects.cloudpickle`` when it is asked for.

    The file is checked against its recorded SHA-256 now, so a tampered model fails at load
    whatever ``verify_integrity`` says (skipping the hashes saves time on large variable files,
    while this file is small and unpickling it runs code), and again right before unpickling.
    """
    if conf.custom_objects is None:
        return None
    path = os.path.join(model_path, CUSTOM_OBJECTS_FILE)
    if conf.custom_objects_sha256 is None:
        raise invalid_parameter_value(
            f"The MLmodel file of {model_path!r} names custom objects but records no "
            f"{FLAVOR_NAME}.custom_objects_sha256, so {CUSTOM_OBJECTS_FILE} cannot be checked "
            "before it is unpickled (which runs code). Re-log the model with custom_objects=."
        )
    _check_custom_objects(path, conf.custom_objects_sha256)

    def unpickle():
        import cloudpickle

        _check_custom_objects(path, conf.custom_objects_sha256)
        try:
            with open(path, "rb") as f:
                return cloudpickle.load(f)
        except Exception as e:  # noqa: BLE001 - unpickling raises anything the pickle's code raises
            raise invalid_parameter_value(
                f"Cannot unpickle {path!r}: {type(e).__name__}: {e}. Make the custom objects' "
                "modules importable (code_paths=) or re-log the model."
            ) from e

    return unpickle


def _check_custom_objects(path, expected):
    if not os.path.isfile(path):
        raise invalid_parameter_value(f"{path!r} is missing. Download or copy the model again.")
    digest = integrity.sha256_file(path)
    if digest != expected:
        raise invalid_parameter_value(
            f"{path!r} does not match the SHA-256 recorded when the model was saved ({digest[:12]}"
            f"..., recorded {expected[:12]}...): it was changed or cut short and was not "
            "unpickled. Download or copy the model again, or re-log it."
        )
