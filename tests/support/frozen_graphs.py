"""Frozen test graphs: a traced function frozen as the export freezes it, and a way to run one."""

from mlflow_eas_savedmodel.graph.freeze import freeze_concrete_function


def frozen(tf, fn, specs):
    """``(graph_def, input names, output names)`` of ``fn`` traced on ``specs`` and frozen."""
    concrete = tf.function(fn).get_concrete_function(*specs)
    graph_def, inputs, outputs, _, _, _ = freeze_concrete_function(concrete, {})
    return graph_def, inputs, outputs


def run(tf, graph_def, inputs, outputs, feeds):
    """Runs ``graph_def`` in a fresh TF1 session on ``feeds`` (one array per input name)."""
    graph = tf.Graph()
    with graph.as_default():
        # A copy: import_graph_def fills default attrs into the GraphDef it is given.
        tf.compat.v1.import_graph_def(type(graph_def).FromString(graph_def.SerializeToString()), name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        return sess.run(outputs, dict(zip(inputs, feeds)))
