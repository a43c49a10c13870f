"""The one splice every rewrite uses: a node replaced by what ordinary TensorFlow calls build.

The replacement is built in a scratch ``tf.Graph`` whose placeholders stand for the replaced
node's inputs; its ``GraphDef`` is grafted in with names prefixed by the replaced node's name,
placeholder reads rewired to the original inputs, and the final node takes the replaced node's
name, so consumers are untouched.
"""

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.graph import edit
from mlflow_eas_savedmodel.graph.serving_graph import node_name

# Scope under the replaced node's name that holds the nodes a splice adds.
REWRITE_SCOPE = "eas_rewrite"


class Skip(Exception):
    """A node this rewrite cannot replace exactly; the message says why."""


def data_inputs(node):
    """``node``'s data inputs (control inputs ``^name`` left out)."""
    return [i for i in node.input if not i.startswith("^")]


def input_tensors(node, tensors):
    """``[(dtype, TensorShape)]`` of ``node``'s data inputs."""
    return [tensors[i if ":" in i else f"{i}:0"] for i in data_inputs(node)]


def splice(graph_def, node, build, inputs, taken):
    """Replaces ``node`` by what ``build(tf, *placeholders)`` computes.

    Args:
        graph_def: the graph, edited in place: the new nodes are appended and ``node`` is
            cleared, for :func:`drop_cleared` to drop.
        node: the node to replace (one output, ``node:0``).
        build: ``(tf, *placeholders) -> tensor``; placeholders mirror ``inputs``.
        inputs: ``[(dtype, TensorShape)]`` of ``node``'s data inputs.
        taken: the graph's node names, updated with the new ones.
    """
    tf = import_tensorflow()
    scratch = tf.Graph()
    with scratch.as_default():
        placeholders = [
            tf.compat.v1.placeholder(dtype, shape, name=f"input_{i}")
            for i, (dtype, shape) in enumerate(inputs)
        ]
        result = build(tf, *placeholders)
        if result.value_index != 0 or result.op.type == "Placeholder":
            result = tf.identity(result)
    sub = scratch.as_graph_def()

    originals = data_inputs(node)
    controls = [i for i in node.input if i.startswith("^")]
    rewired = {p.op.name: originals[i] for i, p in enumerate(placeholders)}
    prefix = edit.unique_name(f"{node.name}/{REWRITE_SCOPE}", taken) + "/"
    final = result.op.name
    # Nodes without inputs (constants) would sit in the root frame; a control edge from the
    # first input keeps them in its frame when the node lives inside a lowered while loop.
    anchor = "^" + node_name(originals[0])

    def renamed(name):
        return node.name if name == final else prefix + name

    new_nodes = []
    for sub_node in sub.node:
        if sub_node.name in rewired:
            continue
        sub_node.name = renamed(sub_node.name)
        for i, inp in enumerate(sub_node.input):
            control = inp.startswith("^")
            name, sep, port = inp.lstrip("^").partition(":")
            if name in rewired:
                target = rewired[name]
            else:
                target = renamed(name) + sep + port
            sub_node.input[i] = ("^" + node_name(target)) if control else target
        if not sub_node.input:
            sub_node.input.append(anchor)
        if sub_node.name == node.name:
            sub_node.input.extend(controls)
        strip_default_attrs(sub_node)
        new_nodes.append(sub_node)

    taken.update(n.name for n in new_nodes)
    node.Clear()
    graph_def.node.extend(new_nodes)


def strip_default_attrs(node):
    """Drops attrs left at their default, as the export does, so old runtimes never see
    attrs newer than them (``BatchMatMul.grad_x``) and the spliced graph checks clean at once."""
    from tensorflow.python.framework import op_def_registry

    for attr_def in op_def_registry.get(node.op).attr:
        if attr_def.HasField("default_value") and attr_def.name in node.attr:
            if node.attr[attr_def.name] == attr_def.default_value:
                del node.attr[attr_def.name]


def rename_op(node, op):
    """Changes ``node``'s op to ``op`` (same inputs, attrs), dropping attrs ``op`` lacks."""
    from tensorflow.python.framework import op_def_registry

    known = {a.name for a in op_def_registry.get(op).attr}
    for attr in [a for a in node.attr if not a.startswith("_") and a not in known]:
        del node.attr[attr]
    node.op = op
    strip_default_attrs(node)


def drop_cleared(graph_def):
    """Drops the nodes splices cleared (a node always has a name), in one pass."""
    for index in reversed([i for i, n in enumerate(graph_def.node) if not n.name]):
        del graph_def.node[index]
