"""The source's own outputs: what the post-save check (:mod:`..verify`) compares the artifact with.

Every :class:`ServingGraph` gets a :attr:`~.serving_graph.ServingGraph.reference`, a callable
``(signature name, {input key: array}) -> {output key: array}`` that computes with the *source*
(the Keras model's traced function, the user's session, the source SavedModel reloaded), never
with anything the export wrote, so a bug anywhere between the source and ``variables/`` shows as
a difference. :mod:`.session_graph`, :mod:`.functions` and :mod:`.keras_model` set the one of
the live objects they froze; the SavedModel and Saver-checkpoint sources replace it with one
that loads their folder or checkpoint again.

References that need the source loaded again load it only when called, after the export has
released its weights, so the check never holds two copies of them.
"""

import numpy as np

from mlflow_eas_savedmodel._tensorflow import import_tensorflow


def _outputs(keys, values):
    return {k: np.asarray(v) for k, v in zip(keys, values)}


def _tensor(tf, value, dtype):
    array = np.asarray(value)
    if dtype == tf.string:
        array = np.array([v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)], dtype=object).reshape(array.shape)
    return tf.constant(array, dtype=dtype)


def concrete_function_reference(endpoints):
    """A reference over traced functions, each a :class:`~.functions.Endpoint`.

    Functions traced from Keras or ``tf.Module`` take their inputs positionally; the functions
    of a TF2 SavedModel's ``.signatures`` take them by keyword.
    """
    tf = import_tensorflow()
    by_name = {endpoint.name: endpoint for endpoint in endpoints}

    def reference(name, feeds):
        _, concrete, input_keys, output_keys, _ = by_name[name]
        args, kwargs = concrete.structured_input_signature
        if kwargs:
            result = concrete(**{k: _tensor(tf, feeds[k], kwargs[k].dtype) for k in input_keys})
        else:
            specs = tf.nest.flatten(args)
            result = concrete(*[_tensor(tf, feeds[k], s.dtype) for k, s in zip(input_keys, specs)])
        if isinstance(result, dict):
            return {k: np.asarray(result[k]) for k in output_keys}
        return _outputs(output_keys, tf.nest.flatten(result))

    return reference


def session_reference(sess, signatures):
    """A reference running the user's live session: ``{signature: SignatureSpec}`` by tensor name."""

    def reference(name, feeds):
        spec = signatures[name]
        keys = sorted(spec.outputs)
        values = sess.run(
            [spec.outputs[k] for k in keys], {spec.inputs[k]: v for k, v in feeds.items()}
        )
        return _outputs(keys, values)

    return reference


def tf1_saved_model_reference(path, tags):
    """A reference loading the source TF1 SavedModel again (variables restored, main op run)."""
    tf = import_tensorflow()
    state = {}

    def reference(name, feeds):
        if "sess" not in state:
            graph = tf.Graph()
            state["sess"] = tf.compat.v1.Session(graph=graph)
            from tensorflow.python.util import deprecation

            with graph.as_default(), deprecation.silence():
                state["meta"] = tf.compat.v1.saved_model.loader.load(
                    state["sess"], tags, path, clear_devices=True
                )
        signature = state["meta"].signature_def[name]
        keys = sorted(signature.outputs)
        values = state["sess"].run(
            [signature.outputs[k].name for k in keys],
            {signature.inputs[k].name: v for k, v in feeds.items()},
        )
        return _outputs(keys, values)

    reference.close = lambda: _close_session(state)
    return reference


def tf2_saved_model_reference(path, tags, endpoints):
    """A reference loading the source TF2 SavedModel again, then calling the ``.signatures``
    function of each :class:`~.functions.Endpoint` (the traced ones are not kept alive)."""
    tf = import_tensorflow()
    state = {}
    # Only the names and keys: the traced functions would keep the first load alive.
    by_name = {e.name: e._replace(function=None) for e in endpoints}

    def reference(name, feeds):
        if "loaded" not in state:
            state["loaded"] = tf.saved_model.load(path, tags=tags)
        concrete = state["loaded"].signatures[name]
        return concrete_function_reference([by_name[name]._replace(function=concrete)])(name, feeds)

    reference.close = lambda: state.clear()
    return reference


def saver_checkpoint_reference(graph, saver, prefix, signatures):
    """A reference restoring the checkpoint into a new session on the source graph."""
    tf = import_tensorflow()
    state = {}

    def reference(name, feeds):
        if "sess" not in state:
            sess = tf.compat.v1.Session(graph=graph)
            if saver is not None:
                saver.restore(sess, prefix)
            tables = graph.get_collection(tf.compat.v1.GraphKeys.TABLE_INITIALIZERS)
            if tables:
                sess.run(tables)
            state["sess"] = sess
        return session_reference(state["sess"], signatures)(name, feeds)

    reference.close = lambda: _close_session(state)
    return reference


def _close_session(state):
    """Closes the session a lazily opening reference keeps in ``state``, if it opened one."""
    sess = state.pop("sess", None)
    if sess is not None:
        sess.close()
