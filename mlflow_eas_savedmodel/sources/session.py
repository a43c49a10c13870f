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


def session_to_serving_graph(
    model,
    inputs=None,
    outputs=None,
    signature_name=None,
    signatures=None,
    default_signature=None,
    init_op=None,
    input_example=None,
):
    """Freezes a ``tf.compat.v1.Session`` into a :class:`ServingGraph`.

    Args:
        model: the session; its variables must hold the values to serve.
        inputs: ``{key: tensor | "name:0" | TensorInfo}`` of the one signature (simple_save).
        outputs: same form, the one signature's outputs.
        signature_name: the name of that one signature (default ``serving_default``).
        signatures: ``{name: {"inputs": {...}, "outputs": {...}, "method": "predict"}}`` (or
            ``{name: SignatureDef}``); ``method`` is ``predict`` (default), ``classify``,
            ``regress`` or a full method-name constant.
        default_signature: the signature requests use when they name none (default
            ``serving_default`` when present, else the only or first signature).
        init_op: an op (or name, or list) to run at load, e.g. the guide's ``legacy_init_op``.
            Without it, the graph's table initializers are used.
        input_example: not used here (the flavor stores it as the MLmodel input example).

    Returns:
        The :class:`ServingGraph`; ``notes`` says what the conversion changed.

    Example:
        >>> with tf.compat.v1.Session(graph=g) as sess:
        ...     serving_graph = session_to_serving_graph(
        ...         sess, inputs={"image": x}, outputs={"scores": y})
    """
    del input_example
    return serving_graph_from_session(
        model, inputs, outputs, signature_name, signatures, default_signature, init_op
    )
