"""Weights back into reference variables: frozen ``Const`` nodes -> ``VariableV2`` reads.

EAS's old runtimes know ``VariableV2`` (every TF1 model has them) but not TF2's resource
variables as TF 2.21 writes them (``VarHandleOp.debug_name``), so each weight constant becomes
``VariableV2`` + ``Identity`` (the classic ``var/read``), restored by the Saver from
``variables/``. The constant's node keeps its name as the ``Identity``, so no consumer changes.
Values are handed back separately and never stay in the ``GraphDef``: ``saved_model.pb`` holds
only the graph, far from protobuf's 2 GB limit.
"""

import numpy as np

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid
from mlflow_eas_savedmodel.graph import edit

# Constants this large that did not come from a variable (captured arrays, folded transposes)
# are stored as variables too: they are weights in all but name.
LARGE_CONSTANT_BYTES = 64 * 1024


def _tensor_nbytes(node):
    tensor = node.attr["value"].tensor
    return len(tensor.tensor_content)


def weights_to_variables(graph_def, weights):
    """Rewrites ``graph_def`` in place; returns ``{variable name: numpy value}``.

    Args:
        graph_def: frozen graph; its weight constants are replaced and their bytes released.
        weights: ``Const`` node name -> variable name.
    """
    tf = import_tensorflow()
    weights = dict(weights)
    for node in graph_def.node:
        if (
            node.op == "Const"
            and node.name not in weights
            and node.attr["dtype"].type != tf.string.as_datatype_enum
            and _tensor_nbytes(node) >= LARGE_CONSTANT_BYTES
        ):
            weights[node.name] = f"constants/{node.name}"

    # A variable named like its own constant (session sources) takes the name; the read becomes
    # "<name>/read", as in TF1 graphs (or "<name>/read_1" where a frozen reference variable's
    # own "<name>/read" Identity is still there).
    taken = {n.name for n in graph_def.node}
    renamed = {
        name: edit.unique_name(f"{name}/read", taken) for name, var in weights.items() if name == var
    }
    if renamed:
        edit.rename_inputs(graph_def, renamed)
    values, var_nodes = {}, {}
    for node in list(graph_def.node):
        variable = weights.get(node.name)
        if variable is None or node.op != "Const":
            continue
        value = tf.make_ndarray(node.attr["value"].tensor)
        dtype = node.attr["dtype"].type
        if variable in values:
            if values[variable].shape != value.shape or values[variable].dtype != value.dtype:
                raise invalid(
                    f"Two weights are both named {variable!r} with different shapes "
                    f"{values[variable].shape} and {value.shape}. Give the variables unique names."
                )
        else:
            values[variable] = np.ascontiguousarray(value)
            var_name = variable if variable in renamed else edit.unique_name(variable, taken)
            var_nodes[variable] = var_name
            var = graph_def.node.add(name=var_name, op="VariableV2")
            var.attr["dtype"].type = dtype
            var.attr["shape"].shape.CopyFrom(tf.TensorShape(value.shape).as_proto())
        read_name = renamed.get(node.name, node.name)
        node.Clear()
        node.name, node.op = read_name, "Identity"
        node.input.append(var_nodes[variable])
        node.attr["T"].type = dtype
    return values, var_nodes

