"""Ops newer than TF 1.12 -> exact equivalents in ops 1.12 registers.

``SelectV2``, ``BatchMatMulV2``, ``LeakyRelu``, ``FusedBatchNormV3``, ``ParseExampleV2``, the
int64 ``SparseSegment*`` ops and ``Einsum`` (:mod:`.einsum`); each rewrite returns how it
rewrote a node, ``None`` when it needed none, or raises :class:`~.splice.Skip`.
"""

import collections
import functools

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.graph import edit
from mlflow_eas_savedmodel.graph.rewrite.builders import (
    broadcast,
    broadcast_any_rank,
    dim,
    known_rank,
    shape_vector,
)
from mlflow_eas_savedmodel.graph.rewrite.einsum import rewrite_einsum
from mlflow_eas_savedmodel.graph.rewrite.splice import (
    REWRITE_SCOPE,
    Skip,
    data_inputs,
    drop_cleared,
    input_tensors,
    rename_op,
    splice,
)
from mlflow_eas_savedmodel.graph.serving_graph import node_name


_SPARSE_SEGMENT_OPS = ("SparseSegmentSum", "SparseSegmentMean", "SparseSegmentSqrtN")


# --------------------------------------------------------------------------- SelectV2


def _rewrite_select_v2(graph_def, node, tensors, taken):
    """``SelectV2`` (broadcasting) -> ``Select`` (equal shapes) with inputs tiled to one shape.

    With every rank known the tiling is built for that rank; an input of unknown rank (TF 1.15
    Estimators' vocabulary lookups) is reshaped to the broadcast shape's rank at run time
    (``Fill`` of ones before its shape), which is what broadcasting does.
    """
    inputs = input_tensors(node, tensors)
    shapes = [shape for _, shape in inputs]
    if all(s.is_fully_defined() for s in shapes) and shapes[0] == shapes[1] == shapes[2]:
        rename_op(node, "Select")
        return "renamed"
    known = all(s.rank is not None for s in shapes)
    rank = max(s.rank for s in shapes) if known else None

    def build(tf, condition, t, e):
        target = tf.raw_ops.BroadcastArgs(
            s0=tf.raw_ops.BroadcastArgs(s0=tf.shape(condition), s1=tf.shape(t)), s1=tf.shape(e)
        )
        tile = functools.partial(broadcast, rank=rank) if known else broadcast_any_rank
        return tf.raw_ops.Select(
            condition=tile(tf, condition, target), x=tile(tf, t, target), y=tile(tf, e, target)
        )

    splice(graph_def, node, build, inputs, taken)
    return "with inputs broadcast" if known else "with inputs broadcast at run time (unknown rank)"


# --------------------------------------------------------------------------- FusedBatchNormV3


def _rewrite_fused_batch_norm_v3(graph_def, node, tensors, taken):
    """``FusedBatchNormV3`` (TF 1.14+; 1.15's ``tf.layers``/contrib batch norm) at inference ->
    ``FusedBatchNormV2``, which 1.12 has: the same kernel but for ``reserve_space_3``, a
    training-only output that nothing may read. ``is_training=True`` (batch statistics, and a
    moving-average factor V2 lacks) is kept."""
    if "is_training" not in node.attr or node.attr["is_training"].b:
        raise Skip("is_training=True")
    if "exponential_avg_factor" in node.attr and node.attr["exponential_avg_factor"].f != 1.0:
        raise Skip("exponential_avg_factor != 1")
    for other in graph_def.node:
        if any(i.lstrip("^") == f"{node.name}:5" for i in other.input):
            raise Skip(f"reserve_space_3 is read by {other.name!r}")
    rename_op(node, "FusedBatchNormV2")
    return "as FusedBatchNormV2"


# --------------------------------------------------------------------------- BatchMatMulV2


def _rewrite_batch_mat_mul_v2(graph_def, node, tensors, taken):
    """``BatchMatMulV2`` -> ``MatMul`` (2-D weights) or ``BatchMatMul`` (equal batch dims)."""
    inputs = input_tensors(node, tensors)
    (_, x_shape), (_, y_shape) = inputs
    x_rank, y_rank = known_rank(x_shape, "x"), known_rank(y_shape, "y")
    adj_x, adj_y = node.attr["adj_x"].b, node.attr["adj_y"].b

    if x_rank == 2 and y_rank == 2:

        def build(tf, x, y):
            return tf.raw_ops.MatMul(a=x, b=y, transpose_a=adj_x, transpose_b=adj_y)

        splice(graph_def, node, build, inputs, taken)
        return "as MatMul"
    if y_rank == 2 and not adj_x:
        # A dense layer on a sequence: fold the leading dims into rows, one 2-D MatMul.
        def build(tf, x, y):
            rows = tf.reshape(x, shape_vector(tf, [-1, dim(tf, x, -1)]))
            product = tf.raw_ops.MatMul(a=rows, b=y, transpose_a=False, transpose_b=adj_y)
            leading = [dim(tf, x, i) for i in range(x_rank - 1)]
            return tf.reshape(product, shape_vector(tf, leading + [dim(tf, product, 1)]))

        splice(graph_def, node, build, inputs, taken)
        return "as reshape + MatMul"
    if (
        x_rank == y_rank
        and x_shape[:-2].is_fully_defined()
        and x_shape[:-2] == y_shape[:-2]
    ):
        rename_op(node, "BatchMatMul")
        return "renamed"
    rank = max(x_rank, y_rank)

    def build(tf, x, y):
        batch = tf.raw_ops.BroadcastArgs(s0=tf.shape(x)[:-2], s1=tf.shape(y)[:-2])

        def tiled(t):
            target = tf.concat([batch, tf.shape(t)[-2:]], 0)
            return broadcast(tf, t, target, rank)

        return tf.raw_ops.BatchMatMul(x=tiled(x), y=tiled(y), adj_x=adj_x, adj_y=adj_y)

    splice(graph_def, node, build, inputs, taken)
    return "as BatchMatMul with batch dims broadcast"


# --------------------------------------------------------------------------- LeakyRelu


def _rewrite_leaky_relu(graph_def, node, tensors, taken):
    """``LeakyRelu`` (TF 1.13+; Keras ``LeakyReLU``) -> ``Maximum(x, alpha * x)``.

    Bit-identical: the kernel computes ``x > 0 ? x : x * alpha``, and for ``0 <= alpha <= 1``
    the larger of ``x`` and ``x * alpha`` is exactly that (the smaller for ``alpha > 1``).
    """
    inputs = input_tensors(node, tensors)
    alpha = node.attr["alpha"].f if "alpha" in node.attr else 0.2
    if alpha < 0:
        raise Skip(f"alpha {alpha} < 0 has no max/min form")

    def build(tf, x):
        scaled = tf.multiply(x, tf.constant(alpha, x.dtype))
        return tf.maximum(x, scaled) if alpha <= 1 else tf.minimum(x, scaled)

    splice(graph_def, node, build, inputs, taken)
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

    splice(graph_def, node, build, input_tensors(node, tensors), taken)
    return "on int32 segment ids" if not indices64 else (
        "on int32 indices and segment ids" if ids64 else "on int32 indices")


# --------------------------------------------------------------------------- ParseExampleV2


def _rewrite_parse_example_v2(graph_def, node, tensors, taken):
    """``ParseExampleV2`` (TF 2.x ``tf.io.parse_example``) -> ``ParseExample`` (TF 1.x).

    Same outputs in the same order when there are no ragged features and the input is a vector
    of serialized examples: V1 takes each key as a scalar input where V2 takes one vector.
    """
    from tensorflow.python.framework import tensor_util

    if node.attr["ragged_value_types"].list.type:
        raise Skip("ragged features")
    (_, serialized_shape) = input_tensors(node, tensors)[0]
    if serialized_shape.rank != 1:
        raise Skip("serialized input is not a vector")
    by_name = {n.name: n for n in graph_def.node}
    keys = []
    for inp in node.input[2:4]:
        const = by_name.get(node_name(inp))
        if const is None or const.op != "Const":
            raise Skip("feature keys are not constants")
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
    data = data_inputs(node)
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


REWRITES = {
    "SelectV2": _rewrite_select_v2,
    "BatchMatMulV2": _rewrite_batch_mat_mul_v2,
    "Einsum": rewrite_einsum,
    "LeakyRelu": _rewrite_leaky_relu,
    "ParseExampleV2": _rewrite_parse_example_v2,
    "FusedBatchNormV3": _rewrite_fused_batch_norm_v3,
    **{op: _rewrite_int64_segment_ids for op in _SPARSE_SEGMENT_OPS},
}


def rewrite_newer_ops(graph_def):
    """Applies :data:`REWRITES` in place; returns one note per kind of change made or refused."""
    targets = [node for node in graph_def.node if node.op in REWRITES]
    if not targets:
        return []
    tensors = edit.static_tensors(graph_def)
    taken = {n.name for n in graph_def.node}
    done = collections.defaultdict(collections.Counter)
    skipped = collections.defaultdict(list)
    for node in targets:
        op = node.op
        try:
            how = REWRITES[op](graph_def, node, tensors, taken)
        except Skip as reason:
            skipped[op].append(f"{node.name!r} ({reason})")
            continue
        if how is not None:
            done[op][how] += 1
    drop_cleared(graph_def)
    notes = []
    for op, hows in done.items():
        detail = ", ".join(f"{n} {how}" for how, n in sorted(hows.items()))
        notes.append(f"{op} rewritten for TF 1.12: {detail}")
    for op, nodes in skipped.items():
        notes.append(f"{op} kept (no exact rewrite): {', '.join(nodes[:5])}")
    return notes
