"""The rewrites for old runtimes, on small traced graphs: same numbers, only TF 1.12 ops.

Each case traces a ``tf.function`` around one op that TF 1.12 lacks, freezes it the way every
source does (control flow lowered), runs the frozen graph, rewrites it, and checks that the
rewritten graph gives the same outputs and passes the static check against TF 1.12's registry.
"""

import numpy as np
import pytest

from support.frozen_graphs import frozen as _frozen, run as _run

from mlflow_eas_savedmodel.graph import rewrite
from mlflow_eas_savedmodel.runtimes import check_graph

RNG = np.random.default_rng(0)


def _ops(graph_def):
    return {n.op for n in graph_def.node}


def _round_trip(tf, fn, specs, feeds):
    """Returns ``(notes, ops after rewrite)``; asserts equal outputs and a 1.12-clean graph."""
    graph_def, inputs, outputs = _frozen(tf, fn, specs)
    expected = _run(tf, graph_def, inputs, outputs, feeds)
    notes = rewrite.rewrite_for_old_runtimes(graph_def)
    actual = _run(tf, graph_def, inputs, outputs, feeds)
    for e, a in zip(expected, actual):
        assert a.shape == e.shape
        if e.dtype.kind == "O":
            np.testing.assert_array_equal(a, e)
        else:
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    assert check_graph(graph_def, "1.12") == []
    return notes, _ops(graph_def)


def _f32(*shape):
    return RNG.random(shape, dtype=np.float32)


EINSUM_CASES = [
    # (equation, operand shapes with None for dynamic dims, feed shapes)
    ("BTNH,BSNH->BNTS", [(None, 6, 2, 4), (None, 5, 2, 4)], [(3, 6, 2, 4), (3, 5, 2, 4)]),
    ("BNTS,BSNH->BTNH", [(None, 2, 6, 5), (None, 5, 2, 4)], [(3, 2, 6, 5), (3, 5, 2, 4)]),
    ("ij,jk->ik", [(None, 4), (4, 5)], [(3, 4), (4, 5)]),
    ("abc,cd->abd", [(None, None, 4), (4, 2)], [(2, 3, 4), (4, 2)]),
    ("bij,bjk->bki", [(None, 3, 4), (None, 4, 2)], [(5, 3, 4), (5, 4, 2)]),
    ("i,j->ij", [(None,), (3,)], [(4,), (3,)]),
    ("ij,ij->i", [(None, 4), (None, 4)], [(3, 4), (3, 4)]),
    ("ijk,k->ij", [(2, None, 4), (4,)], [(2, 3, 4), (4,)]),
    ("abc,ad->bd", [(3, 2, 4), (3, 5)], [(3, 2, 4), (3, 5)]),
    ("...ij,jk->...ik", [(None, 2, 3, 4), (4, 5)], [(2, 2, 3, 4), (4, 5)]),
    ("ij,jk", [(2, 3), (3, 4)], [(2, 3), (3, 4)]),
    ("ij->ji", [(None, 3)], [(2, 3)]),
    ("ijk->k", [(None, 3, 4)], [(2, 3, 4)]),
]


@pytest.mark.parametrize("equation,shapes,feed_shapes", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum_is_decomposed_exactly(tf, equation, shapes, feed_shapes):
    specs = [tf.TensorSpec(s, tf.float32) for s in shapes]
    notes, ops = _round_trip(
        tf, lambda *xs: tf.einsum(equation, *xs), specs, [_f32(*s) for s in feed_shapes]
    )
    assert "Einsum" not in ops
    assert any(n.startswith("Einsum rewritten for TF 1.12: 1 ") for n in notes), notes


def test_einsum_with_a_diagonal_is_kept_and_reported(tf):
    graph_def, _, _ = _frozen(
        tf, lambda x, y: tf.einsum("ii,ij->ij", x, y), [tf.TensorSpec((3, 3)), tf.TensorSpec((3, 4))]
    )
    notes = rewrite.rewrite_for_old_runtimes(graph_def)
    assert "Einsum" in _ops(graph_def)
    assert len(notes) == 1 and notes[0].startswith("Einsum kept (no exact rewrite):")
    assert "repeats a label" in notes[0]
    assert any("op Einsum does not exist in TF 1.12" in p.reason for p in check_graph(graph_def, "1.12"))


BATCH_MATMUL_CASES = [
    # (x shape, y shape, adj_x, adj_y, feed shapes, how)
    ((None, 6, 8), (8, 4), False, False, [(3, 6, 8), (8, 4)], "as reshape + MatMul"),
    ((None, 6, 8), (4, 8), False, True, [(3, 6, 8), (4, 8)], "as reshape + MatMul"),
    ((2, 6, 8), (2, 8, 4), False, False, [(2, 6, 8), (2, 8, 4)], "renamed"),
    ((None, 2, 6, 8), (None, 2, 8, 4), False, False, [(3, 2, 6, 8), (3, 2, 8, 4)], "as BatchMatMul with batch dims broadcast"),
    ((None, 1, 6, 8), (2, 8, 4), False, False, [(3, 1, 6, 8), (2, 8, 4)], "as BatchMatMul with batch dims broadcast"),
    ((None, 8, 6), (8, 4), True, False, [(3, 8, 6), (8, 4)], "as BatchMatMul with batch dims broadcast"),
    ((6, 8), (None, 8, 4), False, False, [(6, 8), (3, 8, 4)], "as BatchMatMul with batch dims broadcast"),
    ((6, 8), (4, 8), False, True, [(6, 8), (4, 8)], "as MatMul"),
]


@pytest.mark.parametrize("x_shape,y_shape,adj_x,adj_y,feed_shapes,how", BATCH_MATMUL_CASES)
def test_batch_mat_mul_v2_becomes_1_12_ops(tf, x_shape, y_shape, adj_x, adj_y, feed_shapes, how):
    def fn(x, y):
        return tf.raw_ops.BatchMatMulV2(x=x, y=y, adj_x=adj_x, adj_y=adj_y)

    specs = [tf.TensorSpec(x_shape), tf.TensorSpec(y_shape)]
    notes, ops = _round_trip(tf, fn, specs, [_f32(*s) for s in feed_shapes])
    assert "BatchMatMulV2" not in ops
    assert notes == [f"BatchMatMulV2 rewritten for TF 1.12: 1 {how}"]


SELECT_CASES = [
    # (condition, t, e shapes, feed shapes, how)
    ([(2, 3), (2, 3), (2, 3)], [(2, 3)] * 3, "renamed"),
    ([(None, 7), (None, 7), (None, 7)], [(4, 7)] * 3, "with inputs broadcast"),
    ([(None, 1), (None, 5), ()], [(3, 1), (3, 5), ()], "with inputs broadcast"),
    ([(), (4,), (2, 4)], [(), (4,), (2, 4)], "with inputs broadcast"),
    ([(None, 3), (None, 3), (None, 3)], [(0, 3)] * 3, "with inputs broadcast"),
]


@pytest.mark.parametrize("shapes,feed_shapes,how", SELECT_CASES)
def test_select_v2_becomes_select_with_broadcast_inputs(tf, shapes, feed_shapes, how):
    specs = [tf.TensorSpec(shapes[0], tf.bool), tf.TensorSpec(shapes[1]), tf.TensorSpec(shapes[2])]
    feeds = [RNG.random(feed_shapes[0]) > 0.5, _f32(*feed_shapes[1]), _f32(*feed_shapes[2])]
    notes, ops = _round_trip(tf, lambda c, t, e: tf.where(c, t, e), specs, feeds)
    assert "SelectV2" not in ops and "Select" in ops
    assert notes == [f"SelectV2 rewritten for TF 1.12: 1 {how}"]


def test_select_v2_on_strings_is_rewritten(tf):
    specs = [tf.TensorSpec((None,), tf.bool), tf.TensorSpec((None,), tf.string), tf.TensorSpec((), tf.string)]
    feeds = [np.array([True, False, True]), np.array([b"a", b"b", b"c"]), np.array(b"-")]
    _, ops = _round_trip(tf, lambda c, t, e: tf.where(c, t, e), specs, feeds)
    assert "SelectV2" not in ops


UNKNOWN_RANK_SELECT_CASES = [
    # feed shapes of (condition, t, e); the specs have unknown rank (TensorSpec(None))
    [(4,), (4,), ()],
    [(3, 1), (3, 5), (5,)],
    [(), (2, 3), (2, 3)],
    [(0, 2), (0, 2), ()],
    [(2, 1, 3), (4, 1), (1,)],
]


@pytest.mark.parametrize("feed_shapes", UNKNOWN_RANK_SELECT_CASES, ids=str)
def test_select_v2_of_unknown_rank_is_broadcast_at_run_time(tf, feed_shapes):
    """TF 1.15 Estimators' vocabulary lookups: no rank is known until the graph runs."""
    specs = [tf.TensorSpec(None, tf.bool), tf.TensorSpec(None), tf.TensorSpec(None)]
    feeds = [RNG.random(feed_shapes[0]) > 0.5, _f32(*feed_shapes[1]), _f32(*feed_shapes[2])]
    notes, ops = _round_trip(tf, lambda c, t, e: tf.where(c, t, e), specs, feeds)
    assert "SelectV2" not in ops and "Select" in ops
    assert notes == ["SelectV2 rewritten for TF 1.12: 1 with inputs broadcast at run time (unknown rank)"]


def _batch_norm_v3(tf, is_training=False, data_format="NHWC"):
    def fn(x):
        channels = 3
        return tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.constant([1.5, 0.5, 2.0]), offset=tf.constant([0.1, -0.2, 0.0]),
            mean=tf.constant([0.3, 0.1, -0.4]) if not is_training else tf.zeros([0]),
            variance=tf.constant([0.9, 1.2, 0.5]) if not is_training else tf.zeros([0]),
            epsilon=1e-3, data_format=data_format, is_training=is_training,
        )[0] * float(channels)

    return fn


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_fused_batch_norm_v3_at_inference_becomes_v2(tf, data_format):
    spec = tf.TensorSpec((None, 4, 4, 3) if data_format == "NHWC" else (None, 3, 4, 4))
    feed = _f32(2, 4, 4, 3) if data_format == "NHWC" else _f32(2, 3, 4, 4)
    notes, ops = _round_trip(tf, _batch_norm_v3(tf, data_format=data_format), [spec], [feed])
    assert "FusedBatchNormV3" not in ops and "FusedBatchNormV2" in ops
    assert notes == ["FusedBatchNormV3 rewritten for TF 1.12: 1 as FusedBatchNormV2"]


def test_fused_batch_norm_v3_in_training_mode_is_kept_and_named(tf):
    graph_def, _, _ = _frozen(tf, _batch_norm_v3(tf, is_training=True), [tf.TensorSpec((None, 4, 4, 3))])
    notes = rewrite.rewrite_for_old_runtimes(graph_def)
    assert "FusedBatchNormV3" in _ops(graph_def)
    assert len(notes) == 1 and notes[0].startswith("FusedBatchNormV3 kept (no exact rewrite):")
    assert "is_training=True" in notes[0]
    assert any("op FusedBatchNormV3 does not exist in TF 1.12" in p.reason for p in check_graph(graph_def, "1.12"))


def test_rewrite_inside_a_lowered_while_loop_keeps_frames(tf):
    """Constants a splice adds must live in the loop's frame, or the graph does not run."""

    def fn(x, w):
        def body(i, acc):
            return i + 1, tf.tanh(tf.einsum("bij,jk->bik", acc, w))

        return tf.while_loop(lambda i, acc: i < 3, body, [tf.constant(0), x])[1]

    specs = [tf.TensorSpec((None, 2, 4)), tf.TensorSpec((4, 4))]
    notes, ops = _round_trip(tf, fn, specs, [_f32(3, 2, 4), _f32(4, 4)])
    assert "Einsum" not in ops and "Enter" in ops
    assert notes


def test_graph_without_new_ops_is_untouched(tf):
    graph_def, _, _ = _frozen(tf, lambda x: tf.nn.relu(tf.matmul(x, x)), [tf.TensorSpec((3, 3))])
    before = graph_def.SerializeToString(deterministic=True)
    assert rewrite.rewrite_for_old_runtimes(graph_def) == []
    assert graph_def.SerializeToString(deterministic=True) == before


@pytest.mark.parametrize("alpha", [0.2, 0.0, 1.0, 1.5])
def test_leaky_relu_becomes_max_of_x_and_scaled_x_bit_for_bit(tf, alpha):
    x = (RNG.standard_normal((4, 5)) * 3).astype(np.float32)
    graph_def, inputs, outputs = _frozen(tf, lambda v: tf.nn.leaky_relu(v, alpha), [tf.TensorSpec((None, 5))])
    expected = _run(tf, graph_def, inputs, outputs, [x])[0]
    notes = rewrite.rewrite_for_old_runtimes(graph_def)
    assert notes == ["LeakyRelu rewritten for TF 1.12: 1 as Maximum(x, alpha * x)"]
    assert "LeakyRelu" not in _ops(graph_def) and check_graph(graph_def, "1.12") == []
    np.testing.assert_array_equal(_run(tf, graph_def, inputs, outputs, [x])[0], expected)


@pytest.mark.parametrize("op", ["SparseSegmentSum", "SparseSegmentMean", "SparseSegmentSqrtN"])
def test_sparse_segment_ops_on_int64_segment_ids_cast_them_to_int32(tf, op):
    """``embedding_lookup_sparse`` (every ``embedding_column``) feeds int64 segment ids (TF 2.3+)."""
    data = _f32(6, 3)
    indices = np.array([0, 5, 2, 2, 4], np.int32)
    segment_ids = np.array([0, 0, 1, 3, 3], np.int64)  # segment 2 empty
    kernel = getattr(tf.raw_ops, op)
    graph_def, inputs, outputs = _frozen(
        tf, lambda d, i, s: kernel(data=d, indices=i, segment_ids=s),
        [tf.TensorSpec((None, 3)), tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None,), tf.int64)],
    )
    expected = _run(tf, graph_def, inputs, outputs, [data, indices, segment_ids])[0]
    assert any("Tsegmentids" in str(p) for p in check_graph(graph_def, "1.15"))
    notes = rewrite.rewrite_for_old_runtimes(graph_def)
    assert notes == [f"{op} rewritten for TF 1.12: 1 on int32 segment ids"]
    assert check_graph(graph_def, "1.12") == [] and check_graph(graph_def, "1.15") == []
    np.testing.assert_array_equal(_run(tf, graph_def, inputs, outputs, [data, indices, segment_ids])[0], expected)


@pytest.mark.parametrize("segment_dtype,how", [("int32", "on int32 indices"), ("int64", "on int32 indices and segment ids")])
def test_sparse_segment_mean_on_int64_indices_casts_them_to_int32(tf, segment_dtype, how):
    """TF 1.12-1.15 register no kernel for int64 indices (the differential table found it: the
    registry check passes, the C++ loader refuses); the cast makes the graph load there."""
    data = _f32(6, 3)
    indices = np.array([0, 5, 2, 2, 4], np.int64)
    segment_ids = np.array([0, 0, 1, 3, 3], segment_dtype)
    graph_def, inputs, outputs = _frozen(
        tf, lambda d, i, s: tf.raw_ops.SparseSegmentMean(data=d, indices=i, segment_ids=s),
        [tf.TensorSpec((None, 3)), tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), segment_dtype)],
    )
    expected = _run(tf, graph_def, inputs, outputs, [data, indices, segment_ids])[0]
    notes = rewrite.rewrite_for_old_runtimes(graph_def)
    assert notes == [f"SparseSegmentMean rewritten for TF 1.12: 1 {how}"]
    (node,) = [n for n in graph_def.node if n.op == "SparseSegmentMean"]
    assert "Tidx" not in node.attr or node.attr["Tidx"].type == tf.int32.as_datatype_enum
    np.testing.assert_array_equal(_run(tf, graph_def, inputs, outputs, [data, indices, segment_ids])[0], expected)


def test_sparse_segment_op_on_int32_segment_ids_is_untouched(tf):
    graph_def, _, _ = _frozen(
        tf, lambda d, i, s: tf.raw_ops.SparseSegmentMean(data=d, indices=i, segment_ids=s),
        [tf.TensorSpec((None, 3)), tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None,), tf.int32)],
    )
    before = graph_def.SerializeToString(deterministic=True)
    assert rewrite.rewrite_for_old_runtimes(graph_def) == []
    assert graph_def.SerializeToString(deterministic=True) == before
