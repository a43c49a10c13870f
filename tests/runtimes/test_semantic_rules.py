"""Semantic rules and the rewrites that make them moot: kernels that exist but refuse on CPU.

Each rewrite case traces a small ``tf.function``, freezes it like every source, and checks that
the rewritten graph answers exactly like TF 2.21 ran the original and that no rule fires any
more. Each rule has a case where it fires; the ``runtime`` tests run those graphs, written as
plain SavedModels (no rewrite), in the official old wheels, to show the rule's claim is true.
"""


import numpy as np
import pytest
from conftest import runtime_versions

from support.frozen_graphs import frozen as _frozen, run as _run

from mlflow_eas_savedmodel.graph import rewrite
from mlflow_eas_savedmodel.graph.rewrite.splice import strip_default_attrs
from mlflow_eas_savedmodel.runtimes import RUNTIME_VERSIONS, check_all, check_graph
from mlflow_eas_savedmodel.runtimes.semantic import RULES, check_rules, rule_notes

RNG = np.random.default_rng(0)


def _fired(graph_def):
    return {p.reason.split(":")[0] for ps in check_rules(graph_def).values() for p in ps}


def _rewritten_round_trip(tf, fn, specs, feeds, fired_before):
    graph_def, inputs, outputs = _frozen(tf, fn, specs)
    assert _fired(graph_def) == fired_before
    expected = _run(tf, graph_def, inputs, outputs, feeds)
    notes = rewrite.rewrite_for_old_runtimes(graph_def)
    actual = _run(tf, graph_def, inputs, outputs, feeds)
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)
    assert _fired(graph_def) == set()
    for node in graph_def.node:  # as the export does: shape inference filled defaults in
        strip_default_attrs(node)
    assert check_graph(graph_def, "1.12") == []
    assert not graph_def.library.function
    return notes, {n.op for n in graph_def.node}


def test_rules_are_named_and_distinct():
    names = [r.name for r in RULES]
    assert names == ["xla-must-compile", "channels-first-on-cpu", "grouped-convolution-on-cpu"]
    assert all(set(r.runtimes) <= set(RUNTIME_VERSIONS) and r.why for r in RULES)


def test_xla_grouped_convolution_is_inlined_and_split(tf):
    w = RNG.random((3, 3, 2, 6), dtype=np.float32)

    def fn(x):
        conv = tf.function(jit_compile=True)(lambda x: tf.nn.conv2d(x, w, 1, "SAME"))
        return conv(x)

    notes, ops = _rewritten_round_trip(
        tf, fn, [tf.TensorSpec([None, 5, 5, 4], tf.float32)], [RNG.random((2, 5, 5, 4), dtype=np.float32)],
        {"rule xla-must-compile"},
    )
    assert notes == [
        "XLA must-compile calls inlined into plain ops: 1",
        "grouped convolution rewritten for CPU kernels: 1 as Split + Conv2D per group + ConcatV2",
    ]
    assert {"Split", "ConcatV2"} <= ops and "StatefulPartitionedCall" not in ops


def test_one_channel_per_group_becomes_depthwise(tf):
    w = RNG.random((3, 3, 1, 8), dtype=np.float32)

    def fn(x):
        return tf.function(jit_compile=True)(lambda x: tf.nn.conv2d(x, w, 1, "VALID", dilations=2))(x)

    notes, ops = _rewritten_round_trip(
        tf, fn, [tf.TensorSpec([None, 7, 7, 4], tf.float32)], [RNG.random((2, 7, 7, 4), dtype=np.float32)],
        {"rule xla-must-compile"},
    )
    assert notes[1] == "grouped convolution rewritten for CPU kernels: 1 as DepthwiseConv2dNative"
    assert "DepthwiseConv2dNative" in ops


def test_grouped_conv3d_is_split(tf):
    w = RNG.random((2, 2, 2, 2, 4), dtype=np.float32)

    def fn(x):
        return tf.function(jit_compile=True)(lambda x: tf.nn.conv3d(x, w, [1] * 5, "SAME"))(x)

    notes, ops = _rewritten_round_trip(
        tf, fn, [tf.TensorSpec([None, 3, 3, 3, 4], tf.float32)], [RNG.random((2, 3, 3, 3, 4), dtype=np.float32)],
        {"rule xla-must-compile"},
    )
    assert notes[1] == "grouped convolution rewritten for CPU kernels: 1 as Split + Conv3D per group + ConcatV2"


def test_channels_first_ops_are_transposed(tf):
    w = RNG.random((3, 3, 4, 2), dtype=np.float32)

    def fn(x):
        y = tf.nn.conv2d(x, w, [1, 1, 2, 2], "SAME", data_format="NCHW")
        y = tf.nn.max_pool2d(y, 2, 1, "VALID", data_format="NCHW")
        y = tf.nn.avg_pool2d(y, 2, 1, "VALID", data_format="NCHW")
        t = tf.nn.conv2d_transpose(
            x, RNG.random((3, 3, 2, 4), dtype=np.float32), tf.stack([tf.shape(x)[0], 2, 12, 12]), 2,
            data_format="NCHW",
        )
        d = tf.raw_ops.DepthwiseConv2dNative(
            input=x, filter=RNG.random((3, 3, 4, 1), dtype=np.float32), strides=[1, 1, 1, 1],
            padding="SAME", data_format="NCHW",
        )
        return y, t, d

    notes, ops = _rewritten_round_trip(
        tf, fn, [tf.TensorSpec([None, 4, 6, 6], tf.float32)], [RNG.random((2, 4, 6, 6), dtype=np.float32)],
        {"rule channels-first-on-cpu"},
    )
    assert notes == [
        "channels-first ops made channels-last for CPU kernels (transpose, op, transpose): 1 AvgPool, "
        "1 Conv2D, 1 Conv2DBackpropInput, 1 DepthwiseConv2dNative, 1 MaxPool"
    ]
    assert "Transpose" in ops


def _plain_graphs(tf):
    """``{rule: (graph_def, feeds, output)}`` of graphs a rule fires on, without any rewrite."""
    graphs = {}
    for rule, build, shape in (
        (
            "grouped-convolution-on-cpu",
            lambda x: tf.raw_ops.Conv2D(input=x, filter=tf.ones([3, 3, 2, 4]), strides=[1] * 4, padding="SAME"),
            [None, 5, 5, 4],
        ),
        (
            "channels-first-on-cpu",
            lambda x: tf.raw_ops.Conv2D(
                input=x, filter=tf.ones([3, 3, 4, 2]), strides=[1] * 4, padding="SAME", data_format="NCHW"
            ),
            [None, 4, 5, 5],
        ),
    ):
        g = tf.Graph()
        with g.as_default():
            x = tf.compat.v1.placeholder(tf.float32, shape, name="x")
            y = tf.identity(build(x), name="y")
        graphs[rule] = (g, x, y, RNG.random([2] + shape[1:], dtype=np.float32))
    return graphs


@pytest.mark.parametrize("rule", ["grouped-convolution-on-cpu", "channels-first-on-cpu"])
def test_rule_fires_on_what_no_rewrite_touched(tf, rule):
    g, _, _, _ = _plain_graphs(tf)[rule]
    graph_def = g.as_graph_def()
    problems = check_rules(graph_def)
    left_out = [v for v in RUNTIME_VERSIONS if problems[v]]
    assert left_out == (list(RUNTIME_VERSIONS) if rule == "channels-first-on-cpu" else list(RUNTIME_VERSIONS[:-1]))
    (p,) = problems["1.15"]
    assert p.node == "Conv2D" and p.reason.startswith(f"rule {rule}: Conv2D (")
    compatible, _ = check_all(graph_def)
    assert compatible == ([] if rule == "channels-first-on-cpu" else ["tensorflow_cpu_2.7", "tensorflow_gpu_2.7"])
    assert rule_notes(problems) == [f"rule {rule}: TF {', '.join(left_out)} left out"]


def test_xla_rule_leaves_out_runtimes_before_2_3(tf):
    def fn(x):
        return tf.function(jit_compile=True)(lambda x: x * 2.0)(x)

    graph_def, _, _ = _frozen(tf, fn, [tf.TensorSpec([None], tf.float32)])
    problems = check_rules(graph_def)
    assert sorted(v for v, ps in problems.items() if ps) == ["1.12", "1.14", "1.15"]
    assert rule_notes(problems) == ["rule xla-must-compile: TF 1.12, 1.14, 1.15 left out"]


@pytest.mark.runtime
@pytest.mark.parametrize("rule", ["grouped-convolution-on-cpu", "channels-first-on-cpu"])
@pytest.mark.parametrize("version", runtime_versions())
def test_rule_holds_in_the_real_runtime(tf, tmp_path, rule, version):
    """The plain graph, written by TF's own Builder: where the rule leaves the runtime out, the
    runtime refuses it (at load or at run); where it does not, the runtime answers like 2.21."""
    from mlflow_eas_savedmodel.runtimes.runtime_process import run_in_runtime

    g, x, y, feed = _plain_graphs(tf)[rule]
    path = str(tmp_path / "sm")
    with tf.compat.v1.Session(graph=g) as sess:
        builder = tf.compat.v1.saved_model.Builder(path)
        signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
        builder.add_meta_graph_and_variables(
            sess, ["serve"], {"serving_default": signature}, strip_default_attrs=True, clear_devices=True
        )
        builder.save()
        expected = sess.run(y, {x: feed})
    run = run_in_runtime(path, version, {"serving_default": {"x": feed}})
    if not check_rules(g.as_graph_def())[version]:
        assert run.ok, run.report
        np.testing.assert_allclose(run.c_api_outputs["serving_default"]["y"], expected, rtol=1e-5, atol=1e-5)
        return
    if not run.c_api_load_ok:
        assert "Dimensions must be equal" in run.c_api_error, run.report  # 1.12, grouped
        return
    error = run.c_api_run_errors["serving_default"]
    assert "NHWC" in error or "grouped convolutions" in error, error
