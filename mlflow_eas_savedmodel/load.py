"""Loading: ``load_model`` and :func:`load_handle`, the checks every load runs first.

``load_model`` opens the model with :func:`.artifact.open_model` (URI, download, MLmodel). Both
``load_model`` and ``mlflow.pyfunc.load_model`` (through :mod:`.pyfunc`) end in
:func:`load_handle`, which refuses a SavedModel folder other than the one MLmodel names, then
runs the pre-load check every entry point shares (:func:`.artifact_check.check_model_folder`:
a ``.partial-`` folder, symlinks, files that do not match their recorded SHA-256 unless the
check is skipped, a graph the ops policy refuses, an MLmodel whose SignatureDefs differ from the
graph's) and refuses a custom-objects pickle that does not match its SHA-256.
The custom objects are unpickled only when something asks for them
(:attr:`.model.EasSavedModel.custom_objects`; ``load_model`` gives them back): the frozen graph
never needs them. Saving is in :mod:`.save`; the flavor's MLmodel entry in :mod:`.flavor_conf`.
"""

import os

from mlflow_eas_savedmodel import integrity
from mlflow_eas_savedmodel.artifact import open_model, refuse_unfinished
from mlflow_eas_savedmodel.artifact_check import check_model_folder, read_conf
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.flavor_conf import CUSTOM_OBJECTS_FILE, FLAVOR_NAME, not_this_flavor


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
    where = os.fspath(model_uri)
    model = open_model(where, dst_path, unreadable=lambda e: not_this_flavor(where, {}))
    handle = load_handle(
        model.conf.saved_model_path(model.path), device=device, verify_integrity=verify_integrity,
        conf=model.conf, where=where,
    )
    # load_model gives the custom objects back: an unpicklable file fails here, at load.
    handle.custom_objects  # noqa: B018
    return handle


def load_handle(saved_model_dir, device=None, verify_integrity=None, conf=None, where=None):
    """The :class:`~mlflow_eas_savedmodel.model.EasSavedModel` of a model's SavedModel folder.

    Args:
        saved_model_dir: the SavedModel folder inside a model folder (what ``mlflow.pyfunc``
            hands :func:`.pyfunc._load_pyfunc`).
        device, verify_integrity: as in :func:`load_model`.
        conf: the model's :class:`~.flavor_conf.FlavorConf` when the caller has read it.
        where: the model as the user named it, for the messages (default: its folder).
    """
    from mlflow_eas_savedmodel.model import EasSavedModel

    model_path = os.path.dirname(os.path.abspath(saved_model_dir))
    refuse_unfinished(model_path)
    conf = conf or read_conf(model_path, where)
    if os.path.abspath(saved_model_dir) != conf.saved_model_path(model_path):
        raise invalid_parameter_value(
            f"{saved_model_dir!r} is not the SavedModel folder {conf.saved_model_dir!r} that "
            "the model's MLmodel file names. Download or copy the model again."
        )
    # The one pre-load check of every entry point: symlinks, hashes, ops policy, MLmodel vs graph.
    check_model_folder(model_path, conf, verify_integrity=verify_integrity, where=where)
    return EasSavedModel(
        saved_model_dir,
        conf.signature_defs,
        conf.default_signature,
        device=device,
        custom_objects=_custom_objects_loader(model_path, conf),
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
