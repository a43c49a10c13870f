"""Keras models (Keras 3, tf_keras, ``.keras`` and ``.h5`` files) -> :class:`ServingGraph`.

This source opens what the user passed: a model object as it is, a ``.keras``/``.h5`` file
through :func:`load_keras_file` (Keras 3, falling back to tf_keras for Keras 2 H5 files, both in
safe mode unless ``safe_mode=False``). The model is then traced and frozen by
:mod:`..graph.keras_model`, which the checkpoint source uses too; see there why we trace and
freeze instead of calling ``model.export``.
"""

import os
import zipfile

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.keras_model import keras_model_to_serving_graph
from mlflow_eas_savedmodel.graph.serving_graph import DEFAULT_SIGNATURE_NAME

# The SourceOptions this source takes.
OPTIONS = ("inputs", "outputs", "signature_name", "input_example", "custom_objects", "safe_mode")


def _safe_mode_refusal(path, error):
    """The error for a file Keras' safe mode refused (a Lambda or other layer holding code)."""
    return invalid_parameter_value(
        f"Keras model file {path!r} holds Python code (a Lambda layer or another layer stored "
        f"as bytecode), which Keras' safe mode refused to load: {error}. Loading it would run "
        "that code. Rebuild the layer as a registered custom layer and pass "
        "`custom_objects={...}`, or, only for a file you trust, pass "
        "`save_model(..., safe_mode=False)`."
    )


def _refused_by_safe_mode(error):
    return "safe_mode" in str(error)


def load_keras_file(path, custom_objects=None, safe_mode=True):
    """Loads a ``.keras`` or ``.h5`` file with Keras 3, falling back to tf_keras for Keras 2 H5.

    Both read the file in safe mode unless ``safe_mode=False``: tf_keras' ``load_model`` only
    applies its ``safe_mode`` to ``.keras`` files, so H5 files are read inside its
    ``SafeModeScope``, which makes a ``Lambda`` layer refuse to unmarshal its bytecode.
    """
    import_tensorflow()
    if not os.path.exists(path):
        raise invalid_parameter_value(f"Keras model file {path!r} does not exist. Check the path.")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        # Keras reports a non-zip file as "File not found", which sends users the wrong way.
        raise invalid_parameter_value(
            f"Keras model file {path!r} is not a zip archive, so it is truncated or not a .keras "
            "file. Copy it again, or re-save the model with `model.save('model.keras')`."
        )
    import keras

    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
        )
    except Exception as keras3_error:  # noqa: BLE001 - Keras raises many types for bad files
        if safe_mode and _refused_by_safe_mode(keras3_error):
            raise _safe_mode_refusal(path, keras3_error) from keras3_error
        if path.endswith(".keras"):
            raise invalid_parameter_value(
                f"Cannot load Keras model file {path!r}: {keras3_error}. Make sure it was written "
                "by `model.save(...)` and pass the custom layers with `custom_objects={...}`."
            ) from keras3_error
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
