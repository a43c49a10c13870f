"""TF1 sessions -> :class:`ServingGraph`: ``simple_save`` and ``SavedModelBuilder`` semantics.

``inputs=``/``outputs=`` give one SignatureDef (``serving_default`` unless ``signature_name=``),
as ``tf.compat.v1.saved_model.simple_save`` does; ``signatures=`` gives several, as a
``SavedModelBuilder`` ``signature_def_map`` does::

    signatures={
        "predict_images": {"inputs": {"images": x}, "outputs": {"scores": y}, "method": "predict"},
        "lookup": {"inputs": {"words": "words:0"}, "outputs": {"ids": ids}},
    }

Tensors are ``tf.Tensor`` objects of the session's graph, names (``"x:0"``), or ``TensorInfo``
protos (what ``build_tensor_info`` returns); a value may also be a ``SignatureDef`` proto.

The conversion itself is the machinery every TF1 source shares: signature normalisation in
:mod:`..graph.signatures`, freezing, init ops, lookup tables and the weights read from the
live session in :mod:`..graph.session_graph`.
"""

from mlflow_eas_savedmodel.graph.session_graph import serving_graph_from_session
from mlflow_eas_savedmodel.sources.source import Source

# The SourceOptions this source takes.
OPTIONS = (
    "inputs", "outputs", "signature_name", "signatures", "default_signature", "init_op",
    "input_example",
)


def session_to_serving_graph(model, options):
    """Freezes a ``tf.compat.v1.Session`` into a :class:`ServingGraph`.

    Args:
        model: the session; its variables must hold the values to serve.
        options: the :class:`~mlflow_eas_savedmodel.sources.SourceOptions`; ``inputs``,
            ``outputs``, ``signature_name``, ``signatures``, ``default_signature`` and
            ``init_op`` as :func:`~..graph.session_graph.serving_graph_from_session` takes them.

    Returns:
        The :class:`ServingGraph`; ``notes`` says what the conversion changed.

    Example:
        >>> import tensorflow as tf
        >>> from mlflow_eas_savedmodel.sources import SourceOptions
        >>> from mlflow_eas_savedmodel.sources.session import session_to_serving_graph
        >>> with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        ...     x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        ...     w = tf.compat.v1.get_variable("w", initializer=[[1.0], [2.0]])
        ...     y = tf.identity(x @ w, name="y")
        ...     sess.run(tf.compat.v1.global_variables_initializer())
        ...     serving_graph = session_to_serving_graph(
        ...         sess, SourceOptions(inputs={"image": x}, outputs={"scores": y}))
        >>> serving_graph.signatures["serving_default"].outputs
        {'scores': 'y:0'}
    """
    return serving_graph_from_session(
        model,
        options.inputs,
        options.outputs,
        options.signature_name,
        options.signatures,
        options.default_signature,
        options.init_op,
    )


def accepts(model):
    """A ``tf.compat.v1.Session`` (told by its classes and its graph: TensorFlow not imported)."""
    return any(cls.__name__ in ("Session", "BaseSession") for cls in type(model).__mro__) and hasattr(
        model, "graph"
    )


SOURCE = Source(
    kind="session",
    description="a tf.compat.v1.Session",
    options=OPTIONS,
    accepts=accepts,
    to_serving_graph=session_to_serving_graph,
)
