"""Small, explicit ``GraphDef`` edits shared by the sources, the rewrites and the export."""

from mlflow_eas_savedmodel.graph.serving_graph import node_name


def consumers(graph_def):
    """node name -> names of the nodes that read it (data or control input)."""
    result = {}
    for node in graph_def.node:
        for inp in node.input:
            result.setdefault(node_name(inp), []).append(node.name)
    return result


def rename_node(graph_def, old, new):
    """Renames node ``old`` to ``new`` and every reference to it."""
    for node in graph_def.node:
        if node.name == old:
            node.name = new
        for i, inp in enumerate(node.input):
            if node_name(inp) == old:
                prefix = "^" if inp.startswith("^") else ""
                suffix = inp[len(prefix) + len(old):]
                node.input[i] = prefix + new + suffix


def unique_name(base, taken):
    """``base``, or ``base_1``, ``base_2``... whichever is not in ``taken`` (which it updates)."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name
