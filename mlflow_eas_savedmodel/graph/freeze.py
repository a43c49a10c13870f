"""Freezing: a traced function or a live session becomes a frozen ``GraphDef``.

We freeze rather than rebuild graphs by hand because TensorFlow's own converter already does the
hard, version-sensitive parts right: it inlines the function library, lowers ``While``/``If`` to
v1 ``Switch``/``Merge``/``Enter`` frames (old runtimes have no functional control flow, and 1.12's
TensorList ops differ), and rewrites every consumer's dtype when a resource read becomes a
constant. :mod:`mlflow_eas_savedmodel.export` turns the weight constants back into variables.
"""

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.graph.serving_graph import node_name

# Reference (TF1) and resource variables: what freezing turns into constants.
VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp")


def freeze_concrete_function(concrete_fn, variable_names):
    """Freezes a ``ConcreteFunction`` with control flow lowered to v1 ops.

    Args:
        concrete_fn: the traced function; its flat outputs are the serving outputs.
        variable_names: ``id(resource handle)`` -> checkpoint name for the variables it captures.

    Returns:
        ``(graph_def, input_tensor_names, output_tensor_names, weights, tables)`` where
        ``weights`` maps each frozen constant to its variable name and ``tables`` lists the
        ``(placeholder_name, handle)`` pairs of captured lookup tables, which freezing cannot turn
        into constants and the caller must re-create.
    """
    import_tensorflow()
    from tensorflow.python.framework import convert_to_constants

    # The two steps of convert_variables_to_constants_v2_as_graph without its third, which
    # imports the frozen GraphDef back into a new ConcreteFunction that we would throw away:
    # that import is 80% of the freeze time and holds extra copies of every weight.
    converter_data = convert_to_constants._FunctionConverterDataInEager(
        func=concrete_fn, lower_control_flow=True, aggressive_inlining=True
    )
    graph_def, _ = convert_to_constants._replace_variables_by_constants(converter_data=converter_data)
    captured = {id(internal): external for external, internal in concrete_fn.graph.captures}
    weights, tables = {}, []
    for external, internal in concrete_fn.graph.captures:
        placeholder = node_name(internal.name)
        if id(external) in variable_names:
            weights[placeholder] = variable_names[id(external)]
        elif external.dtype.name == "resource":
            tables.append((placeholder, external))
    n_inputs = len(concrete_fn.inputs) - len(captured)
    inputs = [t.name for t in concrete_fn.inputs[:n_inputs]]
    outputs = [t.name for t in concrete_fn.outputs]
    return graph_def, inputs, outputs, weights, tables


def freeze_session(sess, output_node_names):
    """Freezes the part of ``sess.graph`` that ``output_node_names`` need.

    Returns ``(graph_def, weights)``: each variable (``VariableV2`` or resource) becomes a
    constant named like the variable, and ``weights`` maps it to that same checkpoint name.
    """
    import_tensorflow()
    from tensorflow.python.framework import convert_to_constants

    graph_def = sess.graph.as_graph_def()
    variable_nodes = {n.name for n in graph_def.node if n.op in VARIABLE_OPS}
    frozen = convert_to_constants.convert_variables_to_constants_from_session_graph(
        sess, graph_def, list(output_node_names)
    )
    weights = {n.name: n.name for n in frozen.node if n.op == "Const" and n.name in variable_nodes}
    return frozen, weights
