"""Weights into reference variables: stand-in ``Const`` nodes -> ``VariableV2`` reads.

EAS's old runtimes know ``VariableV2`` (every TF1 model has them) but not TF2's resource
variables as TF 2.21 writes them (``VarHandleOp.debug_name``), so each weight constant becomes
``VariableV2`` + ``Identity`` (the classic ``var/read``), restored by the Saver from
``variables/``. The constant's node keeps its name as the ``Identity``, so no consumer changes.
Weight constants are stand-ins (:mod:`.weights`): their shape and dtype are all this module
reads; the values are written by :mod:`mlflow_eas_savedmodel.tensor_bundle` straight from the
model. Large constants of the graph itself are moved out the same way, so ``saved_model.pb``
holds only the graph.
"""

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph import edit
from mlflow_eas_savedmodel.graph.op_facts import LARGE_CONSTANT_BYTES
from mlflow_eas_savedmodel.graph.weights import ArrayValue


def _tensor_nbytes(node):
    tensor = node.attr["value"].tensor
    return len(tensor.tensor_content)


def weights_to_variables(graph_def, weights, values):
    """Rewrites ``graph_def`` in place; returns ``({variable name: WeightValue}, var nodes)``.

    Args:
        graph_def: frozen graph; its weight constants (stand-ins) are replaced.
        weights: ``Const`` node name -> variable name.
        values: variable name -> :class:`~.weights.WeightValue` of every variable in
            ``weights``; the graph's own large constants are added to the result.

    Returns:
        ``(values, var_nodes)``: the values to write, and variable name -> ``VariableV2``
        node name.
    """
    tf = import_tensorflow()
    weights = dict(weights)
    values = dict(values)
    for node in graph_def.node:
        if (
            node.op == "Const"
            and node.name not in weights
            and node.attr["dtype"].type != tf.string.as_datatype_enum
            and _tensor_nbytes(node) >= LARGE_CONSTANT_BYTES
        ):
            weights[node.name] = f"constants/{node.name}"
            values[f"constants/{node.name}"] = ArrayValue(tf.make_ndarray(node.attr["value"].tensor))

    # A variable named like its own constant (session sources) takes the name; the read becomes
    # "<name>/read", as in TF1 graphs (or "<name>/read_1" where a frozen reference variable's
    # own "<name>/read" Identity is still there).
    taken = {n.name for n in graph_def.node}
    renamed = {
        name: edit.unique_name(f"{name}/read", taken) for name, var in weights.items() if name == var
    }
    if renamed:
        edit.rename_inputs(graph_def, renamed)
    specs, var_nodes = {}, {}
    for node in list(graph_def.node):
        variable = weights.get(node.name)
        if variable is None or node.op != "Const":
            continue
        dtype = node.attr["dtype"].type
        shape = tf.TensorShape(node.attr["value"].tensor.tensor_shape)
        if variable in specs:
            if specs[variable] != (shape, dtype):
                raise invalid_parameter_value(
                    f"Two weights are both named {variable!r} with different shapes or dtypes "
                    f"{specs[variable][0]} and {shape}. Give the variables unique names."
                )
        else:
            specs[variable] = (shape, dtype)
            var_name = variable if variable in renamed else edit.unique_name(variable, taken)
            var_nodes[variable] = var_name
            var = graph_def.node.add(name=var_name, op="VariableV2")
            var.attr["dtype"].type = dtype
            var.attr["shape"].shape.CopyFrom(shape.as_proto())
        read_name = renamed.get(node.name, node.name)
        node.Clear()
        node.name, node.op = read_name, "Identity"
        node.input.append(var_nodes[variable])
        node.attr["T"].type = dtype
    missing = sorted(set(specs) - set(values))
    if missing:
        raise invalid_parameter_value(
            f"The serving graph reads the variables {missing[:5]} but their values were not "
            "found in the model. Re-create the model so every variable it uses is tracked by it."
        )
    return {name: values[name] for name in specs}, var_nodes
