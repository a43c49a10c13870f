"""XLA must-compile calls (``tf.function(jit_compile=True)``) inlined into plain ops."""

from mlflow_eas_savedmodel.graph import edit
from mlflow_eas_savedmodel.graph.rewrite.splice import data_inputs, drop_cleared
from mlflow_eas_savedmodel.graph.serving_graph import node_name


CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
MUST_COMPILE_ATTR = "_XlaMustCompile"
INLINE_SCOPE = "eas_inlined"


def is_must_compile_call(node, functions):
    """A call of a function TensorFlow must compile with XLA (``tf.function(jit_compile=True)``)."""
    if node.op not in CALL_OPS:
        return False
    if MUST_COMPILE_ATTR in node.attr and node.attr[MUST_COMPILE_ATTR].b:
        return True
    fdef = functions.get(node.attr["f"].func.name)
    return fdef is not None and MUST_COMPILE_ATTR in fdef.attr and fdef.attr[MUST_COMPILE_ATTR].b


def inline_must_compile_calls(graph_def):
    """Inlines every XLA must-compile call into plain ops; returns how many were inlined.

    Freezing inlines ordinary calls, but not these (``_noinline``), and no runtime before 2.x
    compiles them: Keras builds grouped and channels-first 3-D convolutions this way. Their
    bodies are plain ops that the grouped-convolution rewrite then makes runnable on CPU.
    """
    count = 0
    for _ in range(16):  # bodies may call must-compile functions again; no deeper nesting seen
        functions = {f.signature.name: f for f in graph_def.library.function}
        calls = [n for n in graph_def.node if is_must_compile_call(n, functions)]
        if not calls:
            break
        taken = {n.name for n in graph_def.node}
        for call in calls:
            _inline_call(graph_def, call, functions[call.attr["f"].func.name], taken)
            count += 1
    _drop_unused_functions(graph_def)
    return count


def _inline_call(graph_def, call, fdef, taken):
    from tensorflow.python.framework import function_def_to_graph

    body, flat = function_def_to_graph.function_def_to_graph_def(fdef)
    args = [a.name for a in fdef.signature.input_arg]
    data = data_inputs(call)
    controls = [i for i in call.input if i.startswith("^")]
    bound = dict(zip(args, data))
    prefix = edit.unique_name(f"{call.name}/{INLINE_SCOPE}", taken) + "/"
    anchor = ["^" + node_name(data[0])] if data else []

    def target(name):
        node, sep, port = name.partition(":")
        if node in bound:
            source = bound[node]
            if port not in ("", "0"):
                raise ValueError(f"argument {node!r} read at port {port}")
            return source
        return prefix + node + sep + port

    new_nodes = []
    for node in body.node:
        if node.name in bound:
            continue
        node.name = prefix + node.name
        reads_outside = False
        for i, inp in enumerate(node.input):
            control = inp.startswith("^")
            resolved = target(inp.lstrip("^"))
            reads_outside = reads_outside or not resolved.startswith(prefix)
            node.input[i] = ("^" + node_name(resolved)) if control else resolved
        if not node.input:
            node.input.extend(anchor)
        if not any(i.startswith(prefix) or i.startswith("^" + prefix) for i in node.input):
            node.input.extend(controls)
        new_nodes.append(node)
    outputs = [target(flat[fdef.ret[a.name]]) for a in fdef.signature.output_arg]
    dtypes = list(call.attr["Tout"].list.type)
    renamed = {}
    for i, (tensor, dtype) in enumerate(zip(outputs, dtypes)):
        identity = type(call)()
        identity.name = call.name if i == 0 else f"{call.name}/output_{i}"
        identity.op = "Identity"
        identity.input.append(tensor)
        identity.attr["T"].type = dtype
        new_nodes.append(identity)
        if i:
            renamed[f"{call.name}:{i}"] = identity.name
    for node in graph_def.node:
        for i, inp in enumerate(node.input):
            if inp in renamed:
                node.input[i] = renamed[inp]
    taken.update(n.name for n in new_nodes)
    call.Clear()
    graph_def.node.extend(new_nodes)
    drop_cleared(graph_def)


def _drop_unused_functions(graph_def):
    """Drops library functions no node (or used function) calls any more."""
    by_name = {f.signature.name: f for f in graph_def.library.function}

    def called(nodes):
        for node in nodes:
            if node.op in by_name:
                yield node.op
            for value in node.attr.values():
                if value.HasField("func"):
                    yield value.func.name
                for func in value.list.func:
                    yield func.name

    used, pending = set(), list(called(graph_def.node))
    while pending:
        name = pending.pop()
        if name in used or name not in by_name:
            continue
        used.add(name)
        pending.extend(called(by_name[name].node_def))
    kept = [f for f in graph_def.library.function if f.signature.name in used]
    if len(kept) != len(graph_def.library.function):
        del graph_def.library.function[:]
        graph_def.library.function.extend(kept)
