"""Small, explicit ``GraphDef`` edits shared by the sources, the rewrites and the export."""

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.graph.serving_graph import node_name, sanitize_node_name


def consumers(graph_def):
    """node name -> names of the nodes that read it (data or control input)."""
    result = {}
    for node in graph_def.node:
        for inp in node.input:
            result.setdefault(node_name(inp), []).append(node.name)
    return result


def rename_inputs(graph_def, renamed):
    """Points every input (data or control) that reads a node in ``renamed`` at its new name."""
    for node in graph_def.node:
        for i, inp in enumerate(node.input):
            prefix = "^" if inp.startswith("^") else ""
            name, sep, port = inp[len(prefix):].partition(":")
            if name in renamed:
                node.input[i] = prefix + renamed[name] + sep + port


def rename_node(graph_def, old, new):
    """Renames node ``old`` to ``new`` and every reference to it (inputs and colocations)."""
    for node in graph_def.node:
        if node.name == old:
            node.name = new
    rename_inputs(graph_def, {old: new})
    rename_colocations(graph_def, lambda name: new if name == old else name)


COLOCATION_ATTR = "_class"
_COLOCATION_PREFIX = b"loc:@"


def rename_colocations(graph_def, rename):
    """Applies ``rename`` (old node name -> new) to every ``_class: loc:@node`` colocation hint.

    TensorFlow refuses to import a graph whose node asks to be colocated with a node it does
    not have, so a hint must follow its node whenever nodes are renamed.
    """
    for node in graph_def.node:
        if COLOCATION_ATTR not in node.attr:
            continue
        hints = node.attr[COLOCATION_ATTR].list.s
        for i, hint in enumerate(hints):
            if hint.startswith(_COLOCATION_PREFIX):
                name = hint[len(_COLOCATION_PREFIX):].decode()
                hints[i] = _COLOCATION_PREFIX + rename(name).encode()


def drop_dangling_colocations(graph_def):
    """Drops every colocation hint naming a node ``graph_def`` lacks; returns how many."""
    names = {n.name for n in graph_def.node}
    dropped = 0
    for node in graph_def.node:
        if COLOCATION_ATTR not in node.attr:
            continue
        hints = node.attr[COLOCATION_ATTR].list.s
        kept = [
            h for h in hints
            if not h.startswith(_COLOCATION_PREFIX) or h[len(_COLOCATION_PREFIX):].decode() in names
        ]
        dropped += len(hints) - len(kept)
        if not kept:
            del node.attr[COLOCATION_ATTR]
        elif len(kept) != len(hints):
            del hints[:]
            hints.extend(kept)
    return dropped


def unique_name(base, taken):
    """``base``, or ``base_1``, ``base_2``... whichever is not in ``taken`` (which it updates)."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def name_outputs(graph_def, out_names, keys):
    """Renames the traced ``Identity``/``Identity_1`` output nodes after their signature keys."""
    taken = {n.name for n in graph_def.node}
    readers = consumers(graph_def)
    by_name = {n.name: n for n in graph_def.node}
    named = []
    for tensor, key in zip(out_names, keys):
        old = node_name(tensor)
        node = by_name.get(old)
        if node is not None and node.op == "Identity" and not readers.get(old) and tensor.endswith(":0"):
            taken.discard(old)
            new = unique_name(sanitize_node_name(key), taken)
            rename_node(graph_def, old, new)
            by_name[new] = node
            named.append(f"{new}:0")
        else:
            named.append(tensor)
    return named


def static_tensors(graph_def):
    """tensor name (``"node:0"``) -> ``(dtype, TensorShape)`` from a throwaway import.

    The import fills default attrs into ``graph_def``; harmless, the export strips them again.
    Colocation hints naming nodes the graph lacks (renamed or spliced out) are dropped first:
    TensorFlow refuses to import them, and the export drops every hint anyway.
    """
    tf = import_tensorflow()
    drop_dangling_colocations(graph_def)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    return {t.name: (t.dtype, t.shape) for op in graph.get_operations() for t in op.outputs}
