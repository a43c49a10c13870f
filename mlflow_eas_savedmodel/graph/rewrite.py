"""Rewrites that widen the set of EAS runtimes a frozen graph loads in.

Keras 3 on TF 2.21 emits four ops that old EAS runtimes lack (measured, see the shared
reference): ``SelectV2`` (TF 1.13+; ``Embedding``, masking), ``BatchMatMulV2`` (1.13+; dense
layers on 3-D inputs, attention), ``Einsum`` (1.15+; attention scores) and ``LeakyRelu`` (1.13+;
Keras ``LeakyReLU``). Estimator-era ``embedding_column``\s add ``SparseSegmentMean``/``SqrtN``/``Sum``
on int64 segment ids (TF 2.3+), which a cast to int32 makes 1.x-loadable; TF 1.15's own
exports add ``FusedBatchNormV3`` (``tf.layers``/contrib batch norm), which at inference is
``FusedBatchNormV2`` plus a training-only output. Each has an exact
equivalent in ops that TF 1.12 registers, so rewriting them lets a model that is otherwise
1.12-clean run on every processor.

The mechanism is one splice (:func:`_splice`): the replacement is built with ordinary TensorFlow
calls in a scratch ``tf.Graph`` whose placeholders stand for the replaced node's inputs; its
``GraphDef`` is grafted in with names prefixed by the replaced node's name, placeholder reads
rewired to the original inputs, and the final node takes the replaced node's name, so consumers
are untouched. Builders call only ops 1.12 has (``tf.raw_ops.Select``/``BatchMatMul`` where the
Python API would emit the V2 op; ``Tile`` rather than ``BroadcastTo`` for broadcasting);
``tests/flavor/test_keras_architectures.py`` checks the rewritten graphs against the 1.12 registry.

A node that needs no rewrite is left alone (``SelectV2`` whose inputs have one static shape is
only renamed; one whose inputs' ranks are unknown is broadcast at run time), and a node that
cannot be rewritten exactly (``BatchMatMulV2`` of unknown rank, an ``Einsum`` with repeated
labels or more than two operands, ``FusedBatchNormV3`` in training mode) is kept and reported
in the notes: the runtime check
still decides compatibility afterwards, so nothing is claimed that the graph cannot do.
"""

import collections
import functools
import re

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.graph import edit
from mlflow_eas_savedmodel.graph.serving_graph import node_name

# Scope under the replaced node's name that holds the nodes a splice adds.
REWRITE_SCOPE = "eas_rewrite"


class _Skip(Exception):
    """A node this rewrite cannot replace exactly; the message says why."""


def rewrite_for_old_runtimes(graph_def):
    """Applies every rewrite in place; returns one note per kind of change made or refused."""
    xla_notes = rewrite_xla_and_grouped_convolutions(graph_def)
    return xla_notes + _rewrite_ops(graph_def)


def _rewrite_ops(graph_def):
    rewrites = {
        "SelectV2": _rewrite_select_v2,
        "BatchMatMulV2": _rewrite_batch_mat_mul_v2,
        "Einsum": _rewrite_einsum,
        "LeakyRelu": _rewrite_leaky_relu,
        "ParseExampleV2": _rewrite_parse_example_v2,
        "FusedBatchNormV3": _rewrite_fused_batch_norm_v3,
        **{op: _rewrite_int64_segment_ids for op in _SPARSE_SEGMENT_OPS},
    }
    targets = [node for node in graph_def.node if node.op in rewrites]
    if not targets:
        return []
    tensors = _static_tensors(graph_def)
    taken = {n.name for n in graph_def.node}
    done = collections.defaultdict(collections.Counter)
    skipped = collections.defaultdict(list)
    for node in targets:
        op = node.op
        try:
            how = rewrites[op](graph_def, node, tensors, taken)
        except _Skip as reason:
            skipped[op].append(f"{node.name!r} ({reason})")
            continue
        if how is not None:
            done[op][how] += 1
    # Spliced-out nodes were cleared (a node always has a name); dropped in one pass, not one
    # search per splice.
    for index in reversed([i for i, n in enumerate(graph_def.node) if not n.name]):
        del graph_def.node[index]
    notes = []
    for op, hows in done.items():
        detail = ", ".join(f"{n} {how}" for how, n in sorted(hows.items()))
        notes.append(f"{op} rewritten for TF 1.12: {detail}")
    for op, nodes in skipped.items():
        notes.append(f"{op} kept (no exact rewrite): {', '.join(nodes[:5])}")
    return notes


# --------------------------------------------------------------------------- graph surgery


def _static_tensors(graph_def):
    """tensor name (``"node:0"``) -> ``(dtype, TensorShape)`` from a throwaway import.

    The import fills default attrs into ``graph_def``; harmless, the export strips them again.
    Colocation hints naming nodes the graph lacks (renamed or spliced out) are dropped first:
    TensorFlow refuses to import them, and the export drops every hint anyway.
    """
    tf = import_tensorflow()
    edit.drop_dangling_colocations(graph_def)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    return {t.name: (t.dtype, t.shape) for op in graph.get_operations() for t in op.outputs}


def _data_inputs(node):
    return [i for i in node.input if not i.startswith("^")]


def _input_tensors(node, tensors):
    """``[(dtype, TensorShape)]`` of ``node``'s data inputs."""
    return [tensors[i if ":" in i else f"{i}:0"] for i in _data_inputs(node)]


def _splice(graph_def, node, build, inputs, taken):
    """Replaces ``node`` by what ``build(tf, *placeholders)`` computes.

    Args:
        graph_def: the graph, edited in place: the new nodes are appended and ``node`` is
            cleared, for :func:`rewrite_for_old_runtimes` to drop.
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

    originals = _data_inputs(node)
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
        _strip_default_attrs(sub_node)
        new_nodes.append(sub_node)

    taken.update(n.name for n in new_nodes)
    node.Clear()
    graph_def.node.extend(new_nodes)


def _strip_default_attrs(node):
    """Drops attrs left at their default, as the export does, so old runtimes never see
    attrs newer than them (``BatchMatMul.grad_x``) and the spliced graph checks clean at once."""
    from tensorflow.python.framework import op_def_registry

    for attr_def in op_def_registry.get(node.op).attr:
        if attr_def.HasField("default_value") and attr_def.name in node.attr:
            if node.attr[attr_def.name] == attr_def.default_value:
                del node.attr[attr_def.name]


def _rename_op(node, op):
    """Changes ``node``'s op to ``op`` (same inputs, attrs), dropping attrs ``op`` lacks."""
    from tensorflow.python.framework import op_def_registry

    known = {a.name for a in op_def_registry.get(op).attr}
    for attr in [a for a in node.attr if not a.startswith("_") and a not in known]:
        del node.attr[attr]
    node.op = op
    _strip_default_attrs(node)


# --------------------------------------------------------------------------- builders' helpers


def _broadcast(tf, x, target_shape, rank):
    """``x`` tiled to ``target_shape`` (a rank-``rank`` int32 vector): broadcasting for 1.12.

    ``BroadcastTo`` is avoided on purpose: ``Reshape`` + ``Tile`` have had CPU and GPU kernels
    for every dtype since TF 1.0. ``max(dim, 1)`` keeps empty batches (0 / 0) well defined.
    """
    if x.shape.rank < rank:
        ones = tf.ones([rank - x.shape.rank], tf.int32)
        x = tf.reshape(x, tf.concat([ones, tf.shape(x)], 0))
    multiples = tf.math.floordiv(target_shape, tf.maximum(tf.shape(x), 1))
    return tf.tile(x, multiples)


def _dim(tf, x, axis):
    """Size of ``x`` along ``axis``: a Python int when static, else a scalar tensor."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def _product(tf, sizes):
    static = functools.reduce(lambda a, b: a * b, [s for s in sizes if isinstance(s, int)], 1)
    dynamic = [s for s in sizes if not isinstance(s, int)]
    if not dynamic:
        return static
    total = functools.reduce(tf.multiply, dynamic)
    return total * static if static != 1 else total


def _shape_vector(tf, sizes):
    """A shape argument from ints and scalar tensors (``Pack`` only when some are dynamic)."""
    if all(isinstance(s, int) for s in sizes):
        return list(sizes)
    return tf.stack([tf.constant(s, tf.int32) if isinstance(s, int) else s for s in sizes])


def _known_rank(shape, what):
    if shape.rank is None:
        raise _Skip(f"{what} has unknown rank")
    return shape.rank


# --------------------------------------------------------------------------- SelectV2


def _rewrite_select_v2(graph_def, node, tensors, taken):
    """``SelectV2`` (broadcasting) -> ``Select`` (equal shapes) with inputs tiled to one shape.

    With every rank known the tiling is built for that rank; an input of unknown rank (TF 1.15
    Estimators' vocabulary lookups) is reshaped to the broadcast shape's rank at run time
    (``Fill`` of ones before its shape), which is what broadcasting does.
    """
    inputs = _input_tensors(node, tensors)
    shapes = [shape for _, shape in inputs]
    if all(s.is_fully_defined() for s in shapes) and shapes[0] == shapes[1] == shapes[2]:
        _rename_op(node, "Select")
        return "renamed"
    known = all(s.rank is not None for s in shapes)
    rank = max(s.rank for s in shapes) if known else None

    def build(tf, condition, t, e):
        target = tf.raw_ops.BroadcastArgs(
            s0=tf.raw_ops.BroadcastArgs(s0=tf.shape(condition), s1=tf.shape(t)), s1=tf.shape(e)
        )
        tile = functools.partial(_broadcast, rank=rank) if known else _broadcast_any_rank
        return tf.raw_ops.Select(
            condition=tile(tf, condition, target), x=tile(tf, t, target), y=tile(tf, e, target)
        )

    _splice(graph_def, node, build, inputs, taken)
    return "with inputs broadcast" if known else "with inputs broadcast at run time (unknown rank)"


def _broadcast_any_rank(tf, x, target_shape):
    """:func:`_broadcast` for an ``x`` whose rank is only known at run time."""
    ones = tf.fill(tf.expand_dims(tf.size(target_shape) - tf.rank(x), 0), 1)
    x = tf.reshape(x, tf.concat([ones, tf.shape(x)], 0))
    multiples = tf.math.floordiv(target_shape, tf.maximum(tf.shape(x), 1))
    return tf.tile(x, multiples)


# --------------------------------------------------------------------------- FusedBatchNormV3


def _rewrite_fused_batch_norm_v3(graph_def, node, tensors, taken):
    """``FusedBatchNormV3`` (TF 1.14+; 1.15's ``tf.layers``/contrib batch norm) at inference ->
    ``FusedBatchNormV2``, which 1.12 has: the same kernel but for ``reserve_space_3``, a
    training-only output that nothing may read. ``is_training=True`` (batch statistics, and a
    moving-average factor V2 lacks) is kept."""
    if "is_training" not in node.attr or node.attr["is_training"].b:
        raise _Skip("is_training=True")
    if "exponential_avg_factor" in node.attr and node.attr["exponential_avg_factor"].f != 1.0:
        raise _Skip("exponential_avg_factor != 1")
    for other in graph_def.node:
        if any(i.lstrip("^") == f"{node.name}:5" for i in other.input):
            raise _Skip(f"reserve_space_3 is read by {other.name!r}")
    _rename_op(node, "FusedBatchNormV2")
    return "as FusedBatchNormV2"


# --------------------------------------------------------------------------- BatchMatMulV2


def _rewrite_batch_mat_mul_v2(graph_def, node, tensors, taken):
    """``BatchMatMulV2`` -> ``MatMul`` (2-D weights) or ``BatchMatMul`` (equal batch dims)."""
    inputs = _input_tensors(node, tensors)
    (_, x_shape), (_, y_shape) = inputs
    x_rank, y_rank = _known_rank(x_shape, "x"), _known_rank(y_shape, "y")
    adj_x, adj_y = node.attr["adj_x"].b, node.attr["adj_y"].b

    if x_rank == 2 and y_rank == 2:

        def build(tf, x, y):
            return tf.raw_ops.MatMul(a=x, b=y, transpose_a=adj_x, transpose_b=adj_y)

        _splice(graph_def, node, build, inputs, taken)
        return "as MatMul"
    if y_rank == 2 and not adj_x:
        # A dense layer on a sequence: fold the leading dims into rows, one 2-D MatMul.
        def build(tf, x, y):
            rows = tf.reshape(x, _shape_vector(tf, [-1, _dim(tf, x, -1)]))
            product = tf.raw_ops.MatMul(a=rows, b=y, transpose_a=False, transpose_b=adj_y)
            leading = [_dim(tf, x, i) for i in range(x_rank - 1)]
            return tf.reshape(product, _shape_vector(tf, leading + [_dim(tf, product, 1)]))

        _splice(graph_def, node, build, inputs, taken)
        return "as reshape + MatMul"
    if (
        x_rank == y_rank
        and x_shape[:-2].is_fully_defined()
        and x_shape[:-2] == y_shape[:-2]
    ):
        _rename_op(node, "BatchMatMul")
        return "renamed"
    rank = max(x_rank, y_rank)

    def build(tf, x, y):
        batch = tf.raw_ops.BroadcastArgs(s0=tf.shape(x)[:-2], s1=tf.shape(y)[:-2])

        def tiled(t):
            target = tf.concat([batch, tf.shape(t)[-2:]], 0)
            return _broadcast(tf, t, target, rank)

        return tf.raw_ops.BatchMatMul(x=tiled(x), y=tiled(y), adj_x=adj_x, adj_y=adj_y)

    _splice(graph_def, node, build, inputs, taken)
    return "as BatchMatMul with batch dims broadcast"


# --------------------------------------------------------------------------- LeakyRelu


def _rewrite_leaky_relu(graph_def, node, tensors, taken):
    """``LeakyRelu`` (TF 1.13+; Keras ``LeakyReLU``) -> ``Maximum(x, alpha * x)``.

    Bit-identical: the kernel computes ``x > 0 ? x : x * alpha``, and for ``0 <= alpha <= 1``
    the larger of ``x`` and ``x * alpha`` is exactly that (the smaller for ``alpha > 1``).
    """
    inputs = _input_tensors(node, tensors)
    alpha = node.attr["alpha"].f if "alpha" in node.attr else 0.2
    if alpha < 0:
        raise _Skip(f"alpha {alpha} < 0 has no max/min form")

    def build(tf, x):
        scaled = tf.multiply(x, tf.constant(alpha, x.dtype))
        return tf.maximum(x, scaled) if alpha <= 1 else tf.minimum(x, scaled)

    _splice(graph_def, node, build, inputs, taken)
    return "as Maximum(x, alpha * x)"


# --------------------------------------------------------------------------- sparse segments

_SPARSE_SEGMENT_OPS = ("SparseSegmentSum", "SparseSegmentMean", "SparseSegmentSqrtN")


def _rewrite_int64_segment_ids(graph_def, node, tensors, taken):
    """``SparseSegment{Sum,Mean,SqrtN}`` on int64 segment ids or indices -> the same op on
    ``Cast`` int32.

    TF 1.x's kernels take int32 segment ids only (``Tsegmentids`` came in 2.3), and
    ``embedding_lookup_sparse`` (every ``embedding_column``) feeds them the int64 row numbers of
    a ``SparseTensor``. Segment ids index the output's rows, so they fit in int32 for any output
    that fits in memory: the cast is exact and the sums are the same.
    """
    int64 = import_tensorflow().int64.as_datatype_enum
    ids64 = node.attr["Tsegmentids"].type == int64
    # TF 1.12-1.15 register these kernels for int32 indices only too (measured: "No OpKernel
    # was registered ... Tidx=DT_INT64" at load); the same argument makes that cast exact.
    indices64 = node.attr["Tidx"].type == int64
    if not ids64 and not indices64:
        return None  # int32 already: every runtime has it
    op = getattr(import_tensorflow().raw_ops, node.op)

    def build(tf, data, indices, segment_ids):
        return op(
            data=data, indices=tf.cast(indices, tf.int32) if indices64 else indices,
            segment_ids=tf.cast(segment_ids, tf.int32) if ids64 else segment_ids,
        )

    _splice(graph_def, node, build, _input_tensors(node, tensors), taken)
    return "on int32 segment ids" if not indices64 else (
        "on int32 indices and segment ids" if ids64 else "on int32 indices")


# --------------------------------------------------------------------------- Einsum

_EINSUM_RE = re.compile(r"^([a-zA-Z.]*)(?:,([a-zA-Z.]*))?(?:->([a-zA-Z.]*))?$")


def _parse_einsum(equation, ranks):
    """``(operand label lists, output labels)`` with ``...`` expanded to fresh labels."""
    match = _EINSUM_RE.match(equation.replace(" ", ""))
    if not match or (match.group(2) is None) != (len(ranks) == 1):
        raise _Skip(f"equation {equation!r} is not a one- or two-operand einsum")
    terms = [match.group(1)] + ([match.group(2)] if len(ranks) == 2 else [])
    used = set(re.sub(r"[^a-zA-Z]", "", equation))
    fresh = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in used]
    ellipsis_rank = 0
    operands = []
    for term, rank in zip(terms, ranks):
        if term.count("...") > 1 or term.replace("...", "").count(".") > 0:
            raise _Skip(f"equation {equation!r} has a malformed ellipsis")
        named = len(term.replace("...", ""))
        extra = rank - named
        if "..." not in term and extra:
            raise _Skip(f"equation {equation!r} does not match the operand ranks {ranks}")
        ellipsis_rank = max(ellipsis_rank, extra if "..." in term else 0)
        operands.append((term, extra))
    ell = fresh[:ellipsis_rank]
    labels = []
    for term, extra in operands:
        before, _, after = term.partition("...")
        labels.append(list(before) + (ell[ellipsis_rank - extra:] if "..." in term else []) + list(after))
    if match.group(3) is not None:
        before, _, after = match.group(3).partition("...")
        output = list(before) + (ell if "..." in match.group(3) else []) + list(after)
    else:
        counts = collections.Counter(l for ls in labels for l in ls if l not in ell)
        output = ell + sorted(l for l, n in counts.items() if n == 1)
    for ls in labels + [output]:
        if len(set(ls)) != len(ls):
            raise _Skip(f"equation {equation!r} repeats a label in one term (diagonal)")
    if not set(output) <= {l for ls in labels for l in ls}:
        raise _Skip(f"equation {equation!r} has output labels no operand has")
    return labels, output, ell


def _rewrite_einsum(graph_def, node, tensors, taken):
    """``Einsum`` (TF 1.15+) -> ``Sum``/``Transpose``/``Reshape`` + ``MatMul``/``BatchMatMul``."""
    tf = import_tensorflow()
    inputs = _input_tensors(node, tensors)
    equation = node.attr["equation"].s.decode()
    # Inside a lowered while loop shape inference stops at the Merge of the back edge; the
    # equation still gives the rank of a term without an ellipsis.
    terms = equation.split("->")[0].split(",")
    inputs = [
        (dtype, tf.TensorShape([None] * len(term)))
        if shape.rank is None and "." not in term and len(terms) == len(inputs)
        else (dtype, shape)
        for (dtype, shape), term in zip(inputs, terms)
    ]
    shapes = [shape for _, shape in inputs]
    ranks = [_known_rank(s, "an operand") for s in shapes]
    labels, output, ellipsis_labels = _parse_einsum(equation, ranks)
    if len(labels) == 2:
        sizes = {}
        for ls, shape in zip(labels, shapes):
            for label, size in zip(ls, shape.as_list()):
                if label in sizes and sizes[label] != size and label in ellipsis_labels:
                    # Broadcasting inside the ellipsis (1 vs n): BatchMatMul needs equal dims.
                    raise _Skip(f"equation {equation!r} broadcasts ellipsis dims {sizes[label]} vs {size}")
                sizes.setdefault(label, size)
        shared_ellipsis = [l for l in ellipsis_labels if l in labels[0] and l in labels[1]]
        if any(sizes[l] is None for l in shared_ellipsis):
            raise _Skip(f"equation {equation!r} may broadcast ellipsis dims of unknown size")

    def build(tf, *operands):
        return _einsum(tf, list(operands), [list(ls) for ls in labels], output)

    _splice(graph_def, node, build, inputs, taken)
    return "as transpose/reshape + matmul"


def _sum_unused(tf, x, labels, keep):
    """Sums out the labels of ``x`` that no other term uses."""
    axes = [i for i, l in enumerate(labels) if l not in keep]
    if not axes:
        return x, labels
    return tf.reduce_sum(x, axes), [l for l in labels if l in keep]


def _transpose(tf, x, labels, order):
    perm = [labels.index(l) for l in order]
    return x if perm == sorted(perm) else tf.transpose(x, perm)


def _einsum(tf, operands, labels, output):
    if len(operands) == 1:
        x, ls = _sum_unused(tf, operands[0], labels[0], set(output))
        return _transpose(tf, x, ls, output)
    (a, b), (la, lb) = operands, labels
    a, la = _sum_unused(tf, a, la, set(lb) | set(output))
    b, lb = _sum_unused(tf, b, lb, set(la) | set(output))
    size = {}
    for x, ls in ((a, la), (b, lb)):
        for i, label in enumerate(ls):
            if not isinstance(size.get(label), int):
                size[label] = _dim(tf, x, i)
    batch = [l for l in output if l in la and l in lb]
    contracted = [l for l in la if l in lb and l not in output]
    free_a = [l for l in la if l not in lb]
    free_b = [l for l in lb if l not in la]

    def grouped(x, ls, groups):
        x = _transpose(tf, x, ls, [l for g in groups for l in g])
        if [len(g) for g in groups] == [1] * len(groups):
            return x
        return tf.reshape(x, _shape_vector(tf, [_product(tf, [size[l] for l in g]) for g in groups]))

    if batch:
        a3 = grouped(a, la, [batch, free_a, contracted])
        b3 = grouped(b, lb, [batch, contracted, free_b])
        product = tf.raw_ops.BatchMatMul(x=a3, y=b3)
    else:
        a3 = grouped(a, la, [free_a, contracted])
        b3 = grouped(b, lb, [contracted, free_b])
        product = tf.raw_ops.MatMul(a=a3, b=b3)
    result_labels = batch + free_a + free_b
    groups = [batch, free_a, free_b] if batch else [free_a, free_b]
    if [len(g) for g in groups] != [1] * len(groups):
        product = tf.reshape(product, _shape_vector(tf, [size[l] for l in result_labels]))
    return _transpose(tf, product, result_labels, output)


# --------------------------------------------------------------------------- XLA must-compile calls

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
    data = _data_inputs(call)
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
    for index in reversed([i for i, n in enumerate(graph_def.node) if not n.name]):
        del graph_def.node[index]


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


# --------------------------------------------------------------------------- grouped convolution

_CONV_OPS = {"Conv2D": 4, "Conv3D": 5}


def _channel_axis(node, rank):
    data_format = node.attr["data_format"].s.decode() if "data_format" in node.attr else ""
    return 1 if data_format.startswith("NC") else rank - 1


def grouped_convolution_groups(node, tensors):
    """The group count of a ``Conv2D``/``Conv3D`` (input depth / filter depth), 1 if ungrouped.

    ``None`` when the depths are not known statically.
    """
    (_, x_shape), (_, w_shape) = _input_tensors(node, tensors)[:2]
    rank = _CONV_OPS[node.op]
    if x_shape.rank != rank or w_shape.rank != rank:
        return None
    depth, filter_depth = x_shape[_channel_axis(node, rank)], w_shape[rank - 2]
    if depth is None or filter_depth is None or filter_depth == 0:
        return None
    return depth // filter_depth if depth != filter_depth else 1


def _rewrite_grouped_convolution(graph_def, node, tensors, taken):
    """Grouped ``Conv2D``/``Conv3D`` -> ``Split`` + one convolution per group + ``ConcatV2``, or
    ``DepthwiseConv2dNative`` when each group has one input channel.

    Exact: each output channel of a grouped convolution sums over its group's input channels
    only, which is what the per-group convolution computes. Every CPU kernel from 1.12 to
    2.21 refuses grouped convolutions (``does not support grouped convolutions on the CPU``).
    """
    groups = grouped_convolution_groups(node, tensors)
    if groups is None:
        raise _Skip("input or filter depth unknown")
    if groups == 1:
        return None
    inputs = _input_tensors(node, tensors)
    op = node.op
    rank = _CONV_OPS[op]
    axis = _channel_axis(node, rank)
    attrs = {
        k: node.attr[k]
        for k in ("strides", "padding", "data_format", "dilations", "explicit_paddings")
        if k in node.attr
    }

    (_, x_shape), (_, w_shape) = inputs[:2]
    strides = list(attrs["strides"].list.i)
    if (
        op == "Conv2D"
        and w_shape[2] == 1
        and w_shape.is_fully_defined()
        and strides[1 if axis == 3 else 2] == strides[2 if axis == 3 else 3]
        and not ("explicit_paddings" in attrs and attrs["explicit_paddings"].list.i)
    ):
        # One input channel per group (ConvNeXt, "depthwise" by groups): DepthwiseConv2dNative
        # orders its outputs channel-major like the grouped convolution, so the filter
        # [h, w, 1, groups * m] is the depthwise filter [h, w, groups, m] as it is.
        kh, kw, _, out = w_shape.as_list()

        def build(tf, x, w):
            kwargs = {"strides": strides, "padding": attrs["padding"].s.decode()}
            for key in ("data_format", "dilations"):
                if key in attrs:
                    kwargs[key] = attrs[key].s.decode() if key == "data_format" else list(attrs[key].list.i)
            return tf.raw_ops.DepthwiseConv2dNative(
                input=x, filter=tf.reshape(w, [kh, kw, groups, out // groups]), **kwargs
            )

        _splice(graph_def, node, build, inputs, taken)
        return "as DepthwiseConv2dNative"

    def build(tf, x, w):
        xs = tf.split(x, groups, axis=axis)
        ws = tf.split(w, groups, axis=rank - 1)
        kwargs = {
            "strides": list(attrs["strides"].list.i),
            "padding": attrs["padding"].s.decode(),
        }
        if "data_format" in attrs:
            kwargs["data_format"] = attrs["data_format"].s.decode()
        if "dilations" in attrs:
            kwargs["dilations"] = list(attrs["dilations"].list.i)
        if op == "Conv2D" and "explicit_paddings" in attrs and attrs["explicit_paddings"].list.i:
            kwargs["explicit_paddings"] = list(attrs["explicit_paddings"].list.i)
        conv = getattr(tf.raw_ops, op)
        return tf.concat([conv(input=xi, filter=wi, **kwargs) for xi, wi in zip(xs, ws)], axis)

    _splice(graph_def, node, build, inputs, taken)
    return f"as Split + {op} per group + ConcatV2"


# --------------------------------------------------------------------------- channels-first on CPU

# Ops whose CPU kernels refuse channels-first data in every runtime from 1.14 to 2.7 (measured in
# the official wheels: "only supports NHWC ... on the CPU"), which TF 2.21's oneDNN kernels run.
CHANNELS_FIRST_OPS = {
    "Conv2D": "NCHW",
    "MaxPool": "NCHW",
    "AvgPool": "NCHW",
    "DepthwiseConv2dNative": "NCHW",
    "Conv3D": "NCDHW",
    "MaxPool3D": "NCDHW",
    "AvgPool3D": "NCDHW",
    "Conv2DBackpropInput": "NCHW",  # Conv2DTranspose
    "Conv3DBackpropInputV2": "NCDHW",  # Conv3DTranspose
}
_BACKPROP_OPS = ("Conv2DBackpropInput", "Conv3DBackpropInputV2")
_INPUT_ARG = {"AvgPool": "value"}


def is_channels_first(node):
    return (
        node.op in CHANNELS_FIRST_OPS
        and "data_format" in node.attr
        and node.attr["data_format"].s.decode() == CHANNELS_FIRST_OPS[node.op]
    )


def _rewrite_channels_first(graph_def, node, tensors, taken):
    """A channels-first op -> ``Transpose`` to channels-last, the op, ``Transpose`` back (exact)."""
    op = node.op
    rank = len(CHANNELS_FIRST_OPS[op])
    to_last = [0] + list(range(2, rank)) + [1]
    to_first = [0, rank - 1] + list(range(1, rank - 1))
    inputs = _input_tensors(node, tensors)

    def permuted(values):
        values = list(values)
        return [values[i] for i in to_last] if len(values) == rank else values

    kwargs = {"data_format": "NHWC" if rank == 4 else "NDHWC"}
    for key in ("strides", "ksize", "dilations"):
        if key in node.attr:
            kwargs[key] = permuted(node.attr[key].list.i)
    kwargs["padding"] = node.attr["padding"].s.decode()
    if "explicit_paddings" in node.attr and node.attr["explicit_paddings"].list.i:
        pairs = list(node.attr["explicit_paddings"].list.i)
        pairs = [pairs[2 * i : 2 * i + 2] for i in range(rank)]
        kwargs["explicit_paddings"] = [p for i in to_last for p in pairs[i]]

    def build(tf, x, *rest):
        fn = getattr(tf.raw_ops, op)
        if op in _BACKPROP_OPS:  # (input_sizes, filter, out_backprop): sizes are a shape vector
            sizes, w, grad = x, rest[0], rest[1]
            result = fn(
                input_sizes=tf.gather(sizes, to_last), filter=w, out_backprop=tf.transpose(grad, to_last), **kwargs
            )
            return tf.transpose(result, to_first)
        last = tf.transpose(x, to_last)
        if rest:
            result = fn(input=last, filter=rest[0], **kwargs)
        else:
            result = fn(**{_INPUT_ARG.get(op, "input"): last}, **kwargs)
        return tf.transpose(result, to_first)

    _splice(graph_def, node, build, inputs, taken)
    return op


def rewrite_xla_and_grouped_convolutions(graph_def):
    """Inlines XLA must-compile calls, makes channels-first ops channels-last, splits grouped
    convolutions: what the old runtimes' CPU kernels refuse; returns notes."""
    notes = []
    inlined = inline_must_compile_calls(graph_def)
    if inlined:
        notes.append(f"XLA must-compile calls inlined into plain ops: {inlined}")
    if any(is_channels_first(n) for n in graph_def.node):
        tensors = _static_tensors(graph_def)
        taken = {n.name for n in graph_def.node}
        done = collections.Counter(
            _rewrite_channels_first(graph_def, n, tensors, taken)
            for n in [n for n in graph_def.node if is_channels_first(n)]
        )
        _drop_cleared(graph_def)
        notes.append(
            "channels-first ops made channels-last for CPU kernels (transpose, op, transpose): "
            + ", ".join(f"{n} {op}" for op, n in sorted(done.items()))
        )
    convs = [n for n in graph_def.node if n.op in _CONV_OPS]
    if not convs:
        return notes
    tensors = _static_tensors(graph_def)
    taken = {n.name for n in graph_def.node}
    done = collections.Counter()
    for node in convs:
        try:
            how = _rewrite_grouped_convolution(graph_def, node, tensors, taken)
        except _Skip:
            continue  # depths unknown: the semantic rule cannot see a group either
        if how:
            done[how] += 1
    _drop_cleared(graph_def)
    for how, n in sorted(done.items()):
        notes.append(f"grouped convolution rewritten for CPU kernels: {n} {how}")
    return notes


def _drop_cleared(graph_def):
    for index in reversed([i for i, n in enumerate(graph_def.node) if not n.name]):
        del graph_def.node[index]


# --------------------------------------------------------------------------- ParseExampleV2


def _rewrite_parse_example_v2(graph_def, node, tensors, taken):
    """``ParseExampleV2`` (TF 2.x ``tf.io.parse_example``) -> ``ParseExample`` (TF 1.x).

    Same outputs in the same order when there are no ragged features and the input is a vector
    of serialized examples: V1 takes each key as a scalar input where V2 takes one vector.
    """
    from tensorflow.python.framework import tensor_util

    if node.attr["ragged_value_types"].list.type:
        raise _Skip("ragged features")
    (_, serialized_shape) = _input_tensors(node, tensors)[0]
    if serialized_shape.rank != 1:
        raise _Skip("serialized input is not a vector")
    by_name = {n.name: n for n in graph_def.node}
    keys = []
    for inp in node.input[2:4]:
        const = by_name.get(node_name(inp))
        if const is None or const.op != "Const":
            raise _Skip("feature keys are not constants")
        keys.append([k for k in tensor_util.MakeNdarray(const.attr["value"].tensor).reshape(-1).tolist()])
    sparse_keys, dense_keys = keys
    anchor = "^" + node_name(node.input[0])
    new_inputs = []
    for kind, values in (("sparse_key", sparse_keys), ("dense_key", dense_keys)):
        for i, value in enumerate(values):
            const = graph_def.node.add()
            const.name = edit.unique_name(f"{node.name}/{REWRITE_SCOPE}/{kind}_{i}", taken)
            const.op = "Const"
            const.attr["dtype"].type = 7  # DT_STRING
            const.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
            const.input.append(anchor)
            taken.add(const.name)
            new_inputs.append(const.name)
    data = _data_inputs(node)
    controls = [i for i in node.input if i.startswith("^")]
    defaults = data[5:]
    del node.input[:]
    node.input.extend(data[:2] + new_inputs + defaults + controls)
    n_sparse = node.attr["num_sparse"].i
    attrs = {k: node.attr[k] for k in ("sparse_types", "Tdense", "dense_shapes") if k in node.attr}
    for k in list(node.attr):
        if not k.startswith("_"):
            del node.attr[k]
    node.op = "ParseExample"
    node.attr["Nsparse"].i = n_sparse
    node.attr["Ndense"].i = len(dense_keys)
    for k, v in attrs.items():
        node.attr[k].CopyFrom(v)
    if "sparse_types" not in node.attr:
        node.attr["sparse_types"].list.SetInParent()
    return "as ParseExample"
