"""Sources: each module turns one kind of user model into a :class:`ServingGraph`.

One module per source kind, and the kinds are peers: none imports another. :mod:`.keras`
(Keras objects, ``.keras``/``.h5`` files), :mod:`.session` (``tf.compat.v1.Session``),
:mod:`.checkpoint` (Saver and TF2 checkpoints) and :mod:`.saved_model` (SavedModel folders)
open what the user passed (files and folders checked before TensorFlow runs any of them) and
hand the live objects to the machinery they share, which lives in
:mod:`mlflow_eas_savedmodel.graph`: :mod:`~..graph.session_graph` (a TF1 graph in a session,
its signatures normalised by :mod:`~..graph.signatures`), :mod:`~..graph.functions` (traced
``tf.function`` objects) and :mod:`~..graph.keras_model` (a Keras model). :mod:`.assets` (a
SavedModel's assets stay inside its folder) is a helper of the SavedModel source, not a source.

:func:`to_serving_graph` picks the module from the object's type and gives it the
:class:`SourceOptions` of ``save_model``; each module declares in ``OPTIONS`` which of them it
takes. The modules know nothing of MLflow, pyfunc or the SavedModel layout.
"""

import dataclasses
import os

from mlflow_eas_savedmodel.errors import invalid_parameter_value, pipeline_stage
from mlflow_eas_savedmodel.graph.keras_model import is_keras_model
from mlflow_eas_savedmodel.graph.layout import CHUNKED_SAVED_MODEL, SAVED_MODEL_FILES

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
            os.path.exists(os.path.join(path, f))
            for f in SAVED_MODEL_FILES + (CHUNKED_SAVED_MODEL,)
        ):
            return "saved_model"
        _refuse_session_bundle(path)
        if os.path.exists(path + ".index") or os.path.exists(path + ".meta") or os.path.isdir(path):
            return "checkpoint"
        raise invalid_parameter_value(
            f"Cannot log {path!r}: it is not a .keras/.h5 file, a SavedModel folder "
            "(saved_model.pb or saved_model.pbtxt) or a checkpoint prefix (PREFIX.index). "
            "Check the path."
        )
    raise invalid_parameter_value(
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
            raise invalid_parameter_value(
                f"{folder!r} is a legacy SessionBundle export (export.meta + export-*-of-*), the "
                "format of TensorFlow's retired session_bundle exporter; neither EAS nor this "
                "package loads it. Load it into a session and log that session instead: "
                "`saver = tf.compat.v1.train.import_meta_graph('export.meta'); "
                "saver.restore(sess, 'export'); log_model(sess, inputs={...}, outputs={...})` "
                "with the input and output tensors of its signatures."
            )


_POLICIES = ("allow_file_ops", "safe_mode", "allow_ops")


@dataclasses.dataclass(frozen=True)
class SourceOptions:
    """The source options of ``save_model``, as the user passed them (``None``: not passed).

    A source reads the ones its module lists in ``OPTIONS`` (in the order the error for an
    option it does not take lists them); :func:`to_serving_graph` refuses any other that was
    passed. Every kind lists ``input_example``: the flavor stores it as the MLmodel input
    example, and the Keras source also reads input shapes from it. ``allow_file_ops``,
    ``allow_ops`` and ``safe_mode`` are policies with a default rather than options: they are read by the
    sources that apply them (checking a graph before running it, reading a Keras file) and
    are never refused.
    """

    inputs: object = None
    outputs: object = None
    signature_name: str = None
    signatures: dict = None
    default_signature: str = None
    init_op: object = None
    build_fn: object = None
    custom_objects: dict = None
    input_example: object = None
    allow_file_ops: bool = False
    safe_mode: bool = True
    allow_ops: tuple = ()

    def passed(self):
        """The names of the options passed (not ``None``), the policies left out."""
        return [
            field.name
            for field in dataclasses.fields(self)
            if field.name not in _POLICIES and getattr(self, field.name) is not None
        ]


def to_serving_graph(model, options):
    """Converts any supported source to a :class:`ServingGraph`.

    Args:
        model: what ``save_model`` was given (see :data:`SUPPORTED`).
        options: the :class:`SourceOptions`; one the source kind does not take is an error.
    """
    kind = source_kind(model)
    if kind == "keras":
        from mlflow_eas_savedmodel.sources.keras import OPTIONS
        from mlflow_eas_savedmodel.sources.keras import keras_to_serving_graph as convert
    elif kind == "session":
        from mlflow_eas_savedmodel.sources.session import OPTIONS
        from mlflow_eas_savedmodel.sources.session import session_to_serving_graph as convert
    elif kind == "checkpoint":
        from mlflow_eas_savedmodel.sources.checkpoint import OPTIONS
        from mlflow_eas_savedmodel.sources.checkpoint import checkpoint_to_serving_graph as convert
    else:
        from mlflow_eas_savedmodel.sources.saved_model import OPTIONS
        from mlflow_eas_savedmodel.sources.saved_model import saved_model_to_serving_graph as convert
    unsupported = sorted(name for name in options.passed() if name not in OPTIONS)
    if unsupported:
        raise invalid_parameter_value(
            f"{', '.join(f'`{k}=`' for k in unsupported)} cannot be used with a {kind} source. "
            f"It takes: {', '.join(OPTIONS)}."
        )
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    # What a source raises unforeseen (a TensorFlow error while reading or tracing it) names
    # the stage; the freeze stage inside names itself.
    with pipeline_stage("trace", _signature_names(kind, options)):
        return convert(model, options)


def _signature_names(kind, options):
    """The SignatureDefs the user asked for (``None`` for a folder, which names its own)."""
    if kind == "saved_model":
        return None
    if options.signatures:
        return sorted(options.signatures)
    return [options.signature_name or "serving_default"]
