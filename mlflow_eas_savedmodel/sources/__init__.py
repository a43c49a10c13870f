"""Sources: each module turns one kind of user model into a :class:`ServingGraph`.

One module per source kind, and the kinds are peers: none imports another. :mod:`.keras`
(Keras objects, ``.keras``/``.h5`` files), :mod:`.session` (``tf.compat.v1.Session``),
:mod:`.checkpoint` (Saver and TF2 checkpoints) and :mod:`.saved_model` (SavedModel folders)
open what the user passed (files and folders checked before TensorFlow runs any of them) and
hand the live objects to the machinery they share, which lives in
:mod:`mlflow_eas_savedmodel.graph`: :mod:`~..graph.session_graph` (a TF1 graph in a session,
its signatures normalised by :mod:`~..graph.signatures`), :mod:`~..graph.functions` (traced
``tf.function`` objects, each an ``Endpoint``), :mod:`~..graph.module` (a ``tf.Module``'s
``input_signature`` methods) and :mod:`~..graph.keras_model` (a Keras model). :mod:`.assets`
(a SavedModel's assets stay inside its folder) is a helper of the SavedModel source, not a
source.

Each module declares its kind as one :class:`~.source.Source`, its ``SOURCE``: the kind's name,
what it accepts (``accepts(model)``), the :class:`SourceOptions` it takes (``OPTIONS``) and its
``to_serving_graph``. :data:`SOURCES` lists them in the order they are asked; from it come
:func:`source_kind`, :data:`SUPPORTED`, the errors for a model or path no kind accepts, and
:func:`to_serving_graph`'s dispatch. Adding a kind is one module plus one entry there. The
modules know nothing of MLflow, pyfunc or the SavedModel layout.
"""

import dataclasses
import os

from mlflow_eas_savedmodel.errors import invalid_parameter_value, pipeline_stage
from mlflow_eas_savedmodel.sources import checkpoint, keras, saved_model, session
from mlflow_eas_savedmodel.sources.source import Source, as_path

# Asked in this order, the first that accepts wins: a Keras model before anything else (a
# Keras file is a path), a Session before the path kinds, a SavedModel folder before a
# checkpoint folder (the checkpoint source takes any remaining folder).
SOURCES = (keras.SOURCE, session.SOURCE, saved_model.SOURCE, checkpoint.SOURCE)

__all__ = ["SOURCES", "SUPPORTED", "Source", "SourceOptions", "source_kind", "to_serving_graph"]


def _listed(items, last):
    return ", ".join(items[:-1]) + f"{last} " + items[-1] if len(items) > 1 else "".join(items)


def _supported():
    return _listed([source.description for source in SOURCES], ", or")


# What save_model accepts, as errors list it.
SUPPORTED = _supported()


def source_of(model):
    """The :class:`~.source.Source` of ``model``: the first of :data:`SOURCES` accepting it.

    Raises:
        MlflowException: no kind accepts it (the message lists what is accepted), or a kind
            refused it as looking like one it cannot be.
    """
    for source in SOURCES:
        if source.accepts(model):
            return source
    path = as_path(model)
    if path is not None:
        described = [source.path_description for source in SOURCES if source.path_description]
        raise invalid_parameter_value(
            f"Cannot log {path!r}: it is not {_listed(described, ' or')}. Check the path."
        )
    raise invalid_parameter_value(
        f"Cannot log an object of type {type(model).__module__}.{type(model).__name__}. "
        f"Pass {_supported()}."
    )


def source_kind(model):
    """The source kind of ``model`` (``"keras"``, ``"session"``, ``"saved_model"``, ...)."""
    return source_of(model).kind


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
    source = source_of(model)
    unsupported = sorted(name for name in options.passed() if name not in source.options)
    if unsupported:
        raise invalid_parameter_value(
            f"{', '.join(f'`{k}=`' for k in unsupported)} cannot be used with a {source.kind} "
            f"source. It takes: {', '.join(source.options)}."
        )
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    # What a source raises unforeseen (a TensorFlow error while reading or tracing it) names
    # the stage; the freeze stage inside names itself.
    with pipeline_stage("trace", _signature_names(source, options)):
        return source.to_serving_graph(model, options)


def _signature_names(source, options):
    """The SignatureDefs the user asked for (``None`` for a folder, which names its own)."""
    if source.names_own_signatures:
        return None
    if options.signatures:
        return sorted(options.signatures)
    return [options.signature_name or "serving_default"]
