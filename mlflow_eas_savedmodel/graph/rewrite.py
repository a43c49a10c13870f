"""Rewrites that widen the set of EAS runtimes a frozen graph loads in.

Each rewrite replaces an op that an old runtime lacks by an equivalent of older ops, at the
``GraphDef`` level, keeping the replaced node's name so consumers are untouched. The runtime
check still decides compatibility afterwards; a rewrite only makes more runtimes pass it.
"""

from mlflow_eas_savedmodel._tensorflow import import_tensorflow


def rewrite_for_old_runtimes(graph_def):
    """Applies every rewrite in place; returns one note per kind of change made."""
    notes = []
    for rewrite in (_select_v2_to_select,):
        note = rewrite(graph_def)
        if note:
            notes.append(note)
    return notes


def _select_v2_to_select(graph_def):
    """``SelectV2`` (TF 1.13+) -> ``Select`` when no broadcasting is needed (same shapes).

    Keras 3 emits ``SelectV2`` in ``Embedding`` and masking; TF 1.12 only has ``Select``, which
    needs ``condition`` of ``t``'s shape (or a vector matching its first dimension).
    """
    if not any(node.op == "SelectV2" for node in graph_def.node):
        return None
    shapes = _static_shapes(graph_def)
    changed = 0
    for node in graph_def.node:
        if node.op != "SelectV2":
            continue
        cond, t, e = (shapes.get(i if ":" in i else f"{i}:0") for i in node.input[:3])
        if cond is not None and t is not None and e is not None and cond == t == e and None not in cond:
            node.op = "Select"
            changed += 1
    return f"SelectV2 -> Select ({changed} nodes)" if changed else None


def _static_shapes(graph_def):
    """tensor name -> fully known static shape tuple, from a throwaway import of the graph."""
    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    shapes = {}
    for op in graph.get_operations():
        for t in op.outputs:
            if t.shape.rank is not None:
                shapes[t.name] = tuple(t.shape.as_list())
    return shapes
