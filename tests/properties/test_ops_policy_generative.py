"""Generative test of the ops allowlist (issue 20 item 8), with hypothesis.

1. Graphs holding ops drawn from the whole TF 2.21 registry, placed in the main graph, in a
   library function, in a function only a function-valued attr names, or in a dataset
   function, are either refused statically (an ``MlflowException``, never another error) or
   hold only allowlisted ops.
2. Graphs composed of real TensorFlow pieces (benign ones, and hostile ones aimed at a watched
   folder: file reads and writes, datasets, a hidden DatasetFromGraph, Save, Python, print to a
   file, a text-file table in the request path), each in the main graph, inside a
   ``tf.function``, a nested one or a dataset function, are refused whenever a hostile piece is
   in them; the accepted ones are run in a session and never touch the watched folder.

Default CI cost is a few seconds (bounded examples); set
``MLFLOW_EAS_SAVEDMODEL_POLICY_EXAMPLES=N`` for N examples per property (e.g. 2000).
"""

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.graph import ops_policy
from support.paths import REPO

EXAMPLES = int(os.environ.get("MLFLOW_EAS_SAVEDMODEL_POLICY_EXAMPLES", "0"))
SETTINGS = dict(
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SECRET = "root:x:0:0:watched-secret"


@pytest.fixture(scope="module")
def registry_ops(tf):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import dump_op_registry
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return sorted(dump_op_registry.dump()["ops"])  # the C++ registry of TF 2.21, every op


def _all_ops(graph_def):
    """Every op name a graph can run: nodes, function nodes, ops named by func attrs."""
    library = {f.signature.name for f in graph_def.library.function}
    names = []
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    for node in nodes:
        if node.op not in library:
            names.append(node.op)
        for value in node.attr.values():
            funcs = ([value.func] if value.HasField("func") else []) + list(value.list.func)
            names.extend(f.name for f in funcs if f.name not in library)
    return names


def _static_graph(tf, drawn):
    """A GraphDef with the drawn ``(op, placement)`` nodes (NodeDefs: never run)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        fn = tf.function(lambda v: v + 1.0, input_signature=[tf.TensorSpec([None], tf.float32)])
        concrete = fn.get_concrete_function()
        concrete.add_to_graph(graph)
        tf.raw_ops.PartitionedCall(args=[x], Tout=[tf.float32], f=concrete.function_def.signature.name, name="call")
    graph_def = graph.as_graph_def()
    template = graph_def.library.function[0]
    for i, (op, placement) in enumerate(drawn):
        if placement == "main":
            graph_def.node.add(name=f"n{i}", op=op)
            continue
        function = graph_def.library.function.add()
        function.CopyFrom(template)
        function.signature.name = f"f{i}"
        function.node_def.add(name=f"n{i}", op=op)
        if placement == "function":
            graph_def.node.add(name=f"call{i}", op="PartitionedCall").attr["f"].func.name = function.signature.name
        elif placement == "attr":  # named only inside another func attr's own attrs
            call = graph_def.node.add(name=f"call{i}", op="PartitionedCall")
            call.attr["f"].func.name = template.signature.name
            call.attr["f"].func.attr["inner"].func.name = function.signature.name
        elif placement == "attr_op":  # a func attr naming the op itself
            graph_def.node.add(name=f"call{i}", op="PartitionedCall").attr["f"].func.name = op
        else:  # a dataset function
            graph_def.node.add(name=f"map{i}", op="MapDataset").attr["f"].func.name = function.signature.name
    return graph_def


def test_ops_drawn_from_the_whole_registry_are_refused_or_allowlisted(tf, registry_ops):
    allowed = ops_policy.allowed_ops()
    placements = st.sampled_from(["main", "function", "attr", "attr_op", "dataset"])

    @settings(max_examples=EXAMPLES or 100, **SETTINGS)
    @given(st.lists(st.tuples(st.sampled_from(registry_ops), placements), min_size=1, max_size=4))
    def check(drawn):
        graph_def = _static_graph(tf, drawn)
        ops = _all_ops(graph_def)
        try:
            ops_policy.check_graph_def(graph_def, "The model")
        except MlflowException as e:
            refused = [op for op in ops if op not in allowed]
            assert refused, e.message  # a refusal always names an op off the list ...
            for op in refused:
                assert f"({op}: " in e.message or "more\n" in e.message, (op, e.message)
            return
        assert set(ops) <= allowed, sorted(set(ops) - allowed)  # ... and an acceptance has none

    check()


# ---------------------------------------------------------------- running composed real graphs

def _pieces(tf, watched, hidden_graph):
    """``{name: (hostile, build(x) -> float scalar)}``; hostile ones aim at ``watched``."""
    secret = str(watched / "secret.txt")

    def after(op, value):
        with tf.control_dependencies([op]):
            return tf.identity(value)

    def length(s):
        return tf.cast(tf.reduce_sum(tf.strings.length(s)), tf.float32)

    def first(dataset, dtype=tf.string):
        return tf.data.experimental.get_single_element(dataset.take(1))

    def write_in_map(s):
        tf.io.write_file(str(watched / "map.txt"), s)
        return s

    def python(v):
        (watched / "python.txt").write_text("ran")
        return v

    return {
        "matmul": (False, lambda x: tf.reduce_sum(tf.matmul(tf.reshape(x, [1, -1]), tf.reshape(x, [-1, 1])))),
        "strings": (False, lambda x: length(tf.strings.join(["a", tf.strings.as_string(x[0])]))),
        "cond": (False, lambda x: tf.cond(x[0] > 0, lambda: x[0] * 2.0, lambda: x[0])),
        "while": (False, lambda x: tf.while_loop(lambda i, s: i < 3, lambda i, s: (i + 1, s + x[0]), [0, 0.0])[1]),
        "assert": (False, lambda x: after(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(x)), [x]), x[0])),
        "print_stderr": (False, lambda x: after(tf.print(x, output_stream=sys.stderr), x[0])),
        "stateless_random": (False, lambda x: tf.reduce_sum(tf.random.stateless_uniform([2], seed=[1, 2])) + x[0]),
        "read_file": (True, lambda x: length(tf.io.read_file(secret))),
        "write_file": (True, lambda x: after(tf.io.write_file(str(watched / "new.txt"), "pwned"), x[0])),
        "matching_files": (True, lambda x: tf.cast(tf.size(tf.io.matching_files(str(watched / "*"))), tf.float32)),
        "print_file": (True, lambda x: after(tf.print(x, output_stream=f"file://{watched / 'log.txt'}"), x[0])),
        "text_line_dataset": (True, lambda x: length(first(tf.data.TextLineDataset(secret)))),
        "dataset_map_write": (True, lambda x: length(first(tf.data.Dataset.from_tensors("x").map(write_in_map)))),
        "sql_dataset": (True, lambda x: length(first(tf.data.experimental.SqlDataset(
            "sqlite", str(watched / "db.sqlite"), "SELECT 'x'", (tf.string,))))),
        "hidden_graph": (True, lambda x: length(tf.raw_ops.DatasetToSingleElement(
            dataset=tf.raw_ops.DatasetFromGraph(graph_def=tf.constant(hidden_graph)),
            output_types=[tf.string], output_shapes=[[]])[0])),
        "save": (True, lambda x: after(tf.raw_ops.Save(filename=str(watched / "ckpt"), tensor_names=["x"], data=[x]), x[0])),
        "python": (True, lambda x: tf.reduce_sum(tf.numpy_function(python, [x], tf.float32))),
    }


def _snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_composed_graphs_with_a_hostile_piece_are_refused_and_accepted_ones_touch_nothing(tf, tmp_path):
    import sqlite3

    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "secret.txt").write_text(SECRET + "\n")
    sqlite3.connect(watched / "db.sqlite").close()
    hidden_graph = tf.raw_ops.DatasetToGraphV2(
        input_dataset=tf.data.TextLineDataset(str(watched / "secret.txt"))._variant_tensor).numpy()
    before = _snapshot(watched)
    names = sorted(_pieces(tf, watched, hidden_graph))
    placements = st.sampled_from(["main", "function", "nested", "dataset"])
    allowed = ops_policy.allowed_ops()
    outcomes = {"refused": 0, "ran": 0}

    @settings(max_examples=EXAMPLES or 20, **SETTINGS)
    @given(st.lists(st.tuples(st.sampled_from(names), placements), min_size=1, max_size=3))
    def check(drawn):
        graph = tf.Graph()
        with graph.as_default():
            pieces = _pieces(tf, watched, hidden_graph)
            x = tf.compat.v1.placeholder(tf.float32, [2], name="x")
            parts = []
            for name, placement in drawn:
                build = pieces[name][1]
                if placement == "main":
                    parts.append(build(x))
                elif placement == "function":
                    parts.append(tf.function(build)(x))
                elif placement == "nested":
                    inner = tf.function(build)
                    parts.append(tf.function(lambda v: inner(v) + 0.0)(x))
                else:
                    dataset = tf.data.Dataset.from_tensors(x).map(build)
                    parts.append(tf.data.experimental.get_single_element(dataset))
            y = tf.identity(tf.add_n([tf.cast(p, tf.float32) for p in parts]), name="y")
        graph_def = graph.as_graph_def()
        hostile = any(pieces[name][0] for name, _ in drawn) or any(p == "dataset" for _, p in drawn)
        try:
            ops_policy.check_graph_def(graph_def, "The model")
        except MlflowException as e:
            assert hostile, (drawn, e.message)  # benign pieces convert, wherever they are
            outcomes["refused"] += 1
            return
        assert not hostile, drawn
        assert set(_all_ops(graph_def)) <= allowed
        with tf.compat.v1.Session(graph=graph) as sess:
            value = sess.run(y, {x: np.array([1.0, 2.0], np.float32)})
        assert np.isfinite(value)
        assert _snapshot(watched) == before
        outcomes["ran"] += 1

    check()
    assert _snapshot(watched) == before
    assert outcomes["refused"] and outcomes["ran"], outcomes  # both sides were exercised
