"""Keras models (Keras 3, tf_keras, ``.keras`` and ``.h5`` files) -> :class:`ServingGraph`.

This source opens what the user passed: a model object as it is, a ``.keras``/``.h5`` file
through :func:`load_keras_file` (Keras 3, falling back to tf_keras for Keras 2 H5 files, both in
safe mode unless ``safe_mode=False``). The model is then traced and frozen by
:mod:`..graph.keras_model`, which the checkpoint source uses too; see there why we trace and
freeze instead of calling ``model.export``.
"""

import json
import os
import zipfile

import numpy as np

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.keras_model import is_keras_model, keras_model_to_serving_graph
from mlflow_eas_savedmodel.graph.serving_graph import DEFAULT_SIGNATURE_NAME
from mlflow_eas_savedmodel.sources.source import Source, as_path

# The SourceOptions this source takes.
OPTIONS = ("inputs", "outputs", "signature_name", "input_example", "custom_objects", "safe_mode")
_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


# Layers whose config makes Keras run code or read a file when it is rebuilt; Keras 3's safe
# mode refuses each (tf_keras' only refuses a lambda). Checked in the file's config before
# either Keras sees it, so a tf_keras fallback applies the same refusals.
_CODE_LAYERS = ("Lambda", "TFSMLayer", "TorchModuleWrapper")
# Config keys whose string value is a file that a layer opens when built (IndexLookup and its
# StringLookup / IntegerLookup / TextVectorization subclasses, Keras 3 and tf_keras).
_FILE_KEYS = ("vocabulary",)
# Keras 3's guard against HDF5 "shape bombs" (keras/src/saving/saving_lib.py).
_H5_BOMB_FLOOR_BYTES = 1 << 32
_H5_MAX_EXPANSION = 1000
_SAFE_MODE_FIX = "or, only for a file you trust, pass `save_model(..., safe_mode=False)`"


def _safe_mode_refusal(path, error):
    """The error for a file Keras' safe mode refused (a Lambda or other layer holding code)."""
    if "vocabulary file" in str(error):  # Keras 3's IndexLookup, should _check_config miss one
        return invalid_parameter_value(
            f"Keras model file {path!r} names a vocabulary file outside the model file, which "
            f"Keras' safe mode refused to read: {error}. Save the model with the vocabulary "
            f"inside it (as a list, or `adapt` then save as .keras), {_SAFE_MODE_FIX}."
        )
    return invalid_parameter_value(
        f"Keras model file {path!r} holds Python code (a Lambda layer or another layer stored "
        f"as bytecode), which Keras' safe mode refused to load: {error}. Loading it would run "
        "that code. Rebuild the layer as a registered custom layer and pass "
        f"`custom_objects={{...}}`, {_SAFE_MODE_FIX}."
    )


def _refused_by_safe_mode(error):
    return "safe_mode" in str(error)


def _check_config(path, config):
    """Refuses a model config holding code or outside file paths (Keras 3's safe-mode refusals).

    Walks every serialized object in the config (nested models and wrappers included); the
    config is JSON that neither Keras has seen yet.
    """
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        cls = node.get("class_name")
        inner = node.get("config") if isinstance(node.get("config"), dict) else {}
        layer = f"{inner.get('name')!r} ({cls})" if inner.get("name") else repr(cls)
        if cls in _CODE_LAYERS or cls == "__lambda__" or inner.get("function_type") == "lambda":
            raise invalid_parameter_value(
                f"Keras model file {path!r} holds Python code: layer {layer} would run code "
                "stored in the file (or load an outside SavedModel) when rebuilt, which Keras' "
                "safe mode refuses. Rebuild the layer as a registered custom layer and pass "
                f"`custom_objects={{...}}`, {_SAFE_MODE_FIX}."
            )
        for key in _FILE_KEYS:
            if isinstance(inner.get(key), str):
                raise invalid_parameter_value(
                    f"Keras model file {path!r}: layer {layer} reads its {key} from the file "
                    f"{inner[key]!r}, outside the model file, when rebuilt (Keras' safe mode "
                    "refuses this: the path could name any file on this machine). Save the "
                    f"model with the {key} inside it (pass the {key} as a list, or call "
                    f"`adapt`, then save as .keras), {_SAFE_MODE_FIX}."
                )


def _h5_refusal(path, where, what):
    return invalid_parameter_value(
        f"H5 file {path!r}: {where} {what}, so reading it would read or map data from outside "
        "the file (Keras 3 refuses such H5 files). A Keras model file keeps everything inside "
        "it: re-save the model with `model.save('model.h5')` (or `.keras`) from its code."
    )


def _check_h5_structure(path, handle):
    """Refuses links and dataset storage that reach outside the file, and shape bombs.

    Every object is reached through its links without resolving them (an external or soft link
    is refused before anything follows it), each object visited once (hard links may loop).
    """
    import h5py

    seen, stack = set(), [("/", handle)]
    while stack:
        name, group = stack.pop()
        if group.id in seen:
            continue
        seen.add(group.id)
        for child in group:
            child_name = f"{name.rstrip('/')}/{child}"
            link = group.get(child, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                where = f"{child_name!r} is an external link to {link.filename!r}"
                raise _h5_refusal(path, where, "(HDF5 external link)")
            if not isinstance(link, h5py.HardLink):
                raise _h5_refusal(
                    path, f"{child_name!r} is a {type(link).__name__}", "(only hard links are read)"
                )
            obj = group.get(child)
            if isinstance(obj, h5py.Group):
                stack.append((child_name, obj))
            elif isinstance(obj, h5py.Dataset):
                _check_h5_dataset(path, child_name, obj)


def _check_h5_dataset(path, name, dataset):
    if dataset.external:
        files = sorted({entry[0] for entry in dataset.external})
        raise _h5_refusal(
            path, f"dataset {name!r} keeps its data in {files}", "(HDF5 external storage)"
        )
    if dataset.is_virtual:
        where = f"dataset {name!r} is a virtual dataset"
        raise _h5_refusal(path, where, "(mapped from other files)")
    declared = (int(np.prod(dataset.shape, dtype=np.int64)) if dataset.shape else 1) * (
        dataset.dtype.itemsize
    )
    stored = dataset.id.get_storage_size()
    if declared > _H5_BOMB_FLOOR_BYTES and declared > _H5_MAX_EXPANSION * stored:
        raise invalid_parameter_value(
            f"H5 file {path!r}: dataset {name!r} declares {declared} bytes but stores only "
            f"{stored}: reading it would allocate that much (a decompression/shape bomb). "
            "Re-save the model with `model.save('model.h5')` from its code."
        )


def _read_h5(path):
    """``(keras_version or None, model config or None)`` of an H5 file, after its checks."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as e:
        raise invalid_parameter_value(
            f"Cannot load H5 file {path!r}: it is not a readable HDF5 file ({e}), so it is "
            "truncated or not a Keras H5 file. Copy it again, or re-save the model with "
            "`model.save('model.h5')`."
        ) from e
    with handle:
        _check_h5_structure(path, handle)
        attrs = {k: handle.attrs[k] for k in ("keras_version", "model_config") if k in handle.attrs}
    version, config = (
        v.decode("utf-8") if isinstance(v, bytes) else v
        for v in (attrs.get("keras_version"), attrs.get("model_config"))
    )
    try:
        config = json.loads(config) if isinstance(config, str) else None
    except ValueError as e:
        raise invalid_parameter_value(
            f"H5 file {path!r} has a model config that is not JSON ({e}). Copy the file again, "
            "or re-save the model with `model.save('model.h5')`."
        ) from e
    return (version if isinstance(version, str) else None), config


def _read_keras_config(path):
    """The ``config.json`` of a ``.keras`` archive (None if it has none: Keras says so)."""
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            return None
        try:
            return json.loads(archive.read("config.json"))
        except ValueError:
            return None  # Keras' own error names the broken file


def _keras2_format(version):
    """Whether an H5 file's ``keras_version`` says a Keras 1/2 (tf_keras) wrote it."""
    return isinstance(version, str) and version.split(".")[0] in ("1", "2")


def load_keras_file(path, custom_objects=None, safe_mode=True):
    """Loads a ``.keras`` or ``.h5`` file with Keras 3, falling back to tf_keras for Keras 2 H5.

    Before either Keras reads it, the file is checked as Keras 3's safe mode would: an H5 file
    may hold no external links, soft links, external or virtual datasets (always refused: they
    read outside the file), and, unless ``safe_mode=False``, its config no layer that runs code
    (``Lambda``, ``TFSMLayer``) nor a vocabulary file path. The tf_keras fallback is taken only
    for an H5 file that says a Keras 2 wrote it (``keras_version`` 1.x/2.x) and that Keras 3
    could not rebuild; tf_keras then reads it inside its ``SafeModeScope`` (its ``load_model``
    applies ``safe_mode`` only to ``.keras`` files), which makes a ``Lambda`` refuse its bytecode.
    """
    import_tensorflow()
    if not os.path.exists(path):
        raise invalid_parameter_value(f"Keras model file {path!r} does not exist. Check the path.")
    is_keras_v3 = path.endswith(".keras")
    if is_keras_v3 and not zipfile.is_zipfile(path):
        # Keras reports a non-zip file as "File not found", which sends users the wrong way.
        raise invalid_parameter_value(
            f"Keras model file {path!r} is not a zip archive, so it is truncated or not a .keras "
            "file. Copy it again, or re-save the model with `model.save('model.keras')`."
        )
    if is_keras_v3:
        version, config = None, _read_keras_config(path)
    else:
        version, config = _read_h5(path)
    if safe_mode and config is not None:
        _check_config(path, config)
    import keras

    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
        )
    except Exception as keras3_error:  # noqa: BLE001 - Keras raises many types for bad files
        if safe_mode and _refused_by_safe_mode(keras3_error):
            raise _safe_mode_refusal(path, keras3_error) from keras3_error
        if is_keras_v3:
            raise invalid_parameter_value(
                f"Cannot load Keras model file {path!r}: {keras3_error}. Make sure it was written "
                "by `model.save(...)` and pass the custom layers with `custom_objects={...}`."
            ) from keras3_error
        if not _keras2_format(version) or isinstance(keras3_error, (OSError, MemoryError)):
            written = f"Keras {version}" if version else "no Keras version (not a Keras H5 file?)"
            raise invalid_parameter_value(
                f"Cannot load H5 file {path!r} with Keras 3: {keras3_error}. The file says it was "
                f"written by {written}, so tf_keras is not tried. Make sure it was written by "
                "`model.save(...)` and pass the custom layers with `custom_objects={...}`."
            ) from keras3_error
        return _load_with_tf_keras(path, custom_objects, safe_mode, keras3_error)


def _load_with_tf_keras(path, custom_objects, safe_mode, keras3_error):
    try:
        import tf_keras
    except ImportError:
        raise invalid_parameter_value(
            f"Cannot load H5 file {path!r} with Keras 3 ({keras3_error}). If it is a Keras 2 "
            "model, install tf_keras: `pip install tf-keras --no-deps`."
        ) from keras3_error
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    try:
        with SafeModeScope(safe_mode):
            return tf_keras.models.load_model(
                path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
            )
    except Exception as keras2_error:  # noqa: BLE001
        if safe_mode and _refused_by_safe_mode(keras2_error):
            raise _safe_mode_refusal(path, keras2_error) from keras2_error
        raise invalid_parameter_value(
            f"Cannot load H5 file {path!r} with Keras 3 ({keras3_error}) nor tf_keras "
            f"({keras2_error}). Check that the file is complete and pass custom layers with "
            "`custom_objects={...}`."
        ) from keras2_error


def keras_to_serving_graph(model, options):
    """Traces and freezes a Keras model (or ``.keras``/``.h5`` file) into a :class:`ServingGraph`.

    Args:
        model: the Keras model, or the path of its file (read as :func:`load_keras_file` says,
            with ``options.custom_objects`` and ``options.safe_mode``).
        options: the :class:`~mlflow_eas_savedmodel.sources.SourceOptions`; see ``OPTIONS``.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_keras_file(os.fspath(model), options.custom_objects, safe_mode=options.safe_mode)
    signature_name = DEFAULT_SIGNATURE_NAME if options.signature_name is None else options.signature_name
    return keras_model_to_serving_graph(
        model, options.inputs, options.outputs, signature_name, options.input_example
    )


def accepts(model):
    """A Keras model object, or a path ending in ``.keras``, ``.h5`` or ``.hdf5``."""
    path = as_path(model)
    return is_keras_model(model) or (path is not None and path.endswith(_FILE_SUFFIXES))


SOURCE = Source(
    kind="keras",
    description="a Keras model (Keras 3 or tf_keras), a path to a .keras or .h5 file",
    options=OPTIONS,
    accepts=accepts,
    to_serving_graph=keras_to_serving_graph,
    path_description="a .keras/.h5 file",
)
