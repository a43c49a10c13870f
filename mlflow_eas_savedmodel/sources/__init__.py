"""Sources: each module turns one kind of user model into a :class:`ServingGraph`.

:func:`to_serving_graph` picks the module from the object's type; the modules know nothing of
MLflow, pyfunc or the SavedModel layout.
"""

import os

from mlflow_eas_savedmodel.errors import invalid
from mlflow_eas_savedmodel.graph.keras_model import is_keras_model

SUPPORTED = (
    "a Keras model (Keras 3 or tf_keras), a path to a .keras or .h5 file, "
    "a tf.compat.v1.Session, a tf.train.Saver checkpoint prefix, or a SavedModel folder"
)


def _is_session(model):
    return any(cls.__name__ in ("Session", "BaseSession") for cls in type(model).__mro__) and hasattr(
        model, "graph"
    )


def source_kind(model):
    """The source kind of ``model`` ("keras", "session", "checkpoint", "saved_model")."""
    if is_keras_model(model):
        return "keras"
    if _is_session(model):
        return "session"
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if path.endswith((".keras", ".h5", ".hdf5")):
            return "keras"
        if os.path.isdir(path) and any(
            os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")
        ):
            return "saved_model"
        _refuse_session_bundle(path)
        if os.path.exists(path + ".index") or os.path.exists(path + ".meta") or os.path.isdir(path):
            return "checkpoint"
        raise invalid(
            f"Cannot log {path!r}: it is not a .keras/.h5 file, a SavedModel folder "
            "(saved_model.pb or saved_model.pbtxt) or a checkpoint prefix (PREFIX.index). "
            "Check the path."
        )
    raise invalid(
        f"Cannot log an object of type {type(model).__module__}.{type(model).__name__}. "
        f"Pass {SUPPORTED}."
    )


def _refuse_session_bundle(path):
    """A legacy SessionBundle (``export.meta`` + ``export-?????-of-?????``, TF 0.x-1.x
    ``session_bundle`` exporter) looks like a checkpoint folder but is neither that nor a
    SavedModel; EAS's processors load only SavedModels."""
    if not os.path.isdir(path):
        return
    folders = [path] + [os.path.join(path, d) for d in sorted(os.listdir(path)) if d.isdigit()]
    for folder in folders:
        if os.path.exists(os.path.join(folder, "export.meta")):
            raise invalid(
                f"{folder!r} is a legacy SessionBundle export (export.meta + export-*-of-*), the "
                "format of TensorFlow's retired session_bundle exporter; neither EAS nor this "
                "package loads it. Load it into a session and log that session instead: "
                "`saver = tf.compat.v1.train.import_meta_graph('export.meta'); "
                "saver.restore(sess, 'export'); log_model(sess, inputs={...}, outputs={...})` "
                "with the input and output tensors of its signatures."
            )


def to_serving_graph(model, allow_file_ops=False, safe_mode=True, **options):
    """Converts any supported source to a :class:`ServingGraph`.

    ``options`` left at ``None`` are dropped; one the source kind does not take is an error.
    ``allow_file_ops`` goes to the sources that check a graph before running it (SavedModel
    folders, checkpoints; ``save_model`` checks every serving graph afterwards), ``safe_mode``
    to the one that reads Keras files.
    """
    import inspect

    kind = source_kind(model)
    if kind == "keras":
        from mlflow_eas_savedmodel.sources.keras import keras_to_serving_graph as convert
    elif kind == "session":
        from mlflow_eas_savedmodel.sources.session import session_to_serving_graph as convert
    elif kind == "checkpoint":
        from mlflow_eas_savedmodel.sources.checkpoint import checkpoint_to_serving_graph as convert
    else:
        from mlflow_eas_savedmodel.sources.saved_model import saved_model_to_serving_graph as convert
    options = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(convert).parameters
    # input_example is a hint (shapes for models without symbolic inputs), not a demand: a
    # source that does not need it simply does not get it.
    if "input_example" not in accepted:
        options.pop("input_example", None)
    for name, value in (("allow_file_ops", allow_file_ops), ("safe_mode", safe_mode)):
        if name in accepted:
            options[name] = value
    unsupported = sorted(k for k in options if k not in accepted)
    if unsupported:
        raise invalid(
            f"{', '.join(f'`{k}=`' for k in unsupported)} cannot be used with a {kind} source. "
            f"It takes: {', '.join(k for k in accepted if k != 'model' and k != 'path')}."
        )
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    return convert(model, **options)
