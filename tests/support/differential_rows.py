"""The rows of the differential table (``tests/runtimes/test_differential_table.py``).

A row is one stateful construct, one rewrite of ``graph/rewrite/`` or one rule of
``runtimes/semantic.py``, as the smallest model that holds it:

* ``converted`` rows give ``build(tf, folder) -> (source, save_kwargs, feeds, expected)``: the
  source goes through ``save_model`` in TF 2.21 and ``expected`` is TF 2.21's answer (or, for a
  model an old runtime wrote, that runtime's own answer, which TF 2.21's is checked against by
  the save's verification);
* ``rule`` rows give ``build(tf, folder) -> (saved_model_dir, feeds, expected, rule)``: a plain
  SavedModel (TF's own ``Builder``, no conversion) that the rule fires on; where the rule leaves a
  runtime out that runtime must refuse it, elsewhere it must answer like TF 2.21.
"""

import collections
import os

import numpy as np
from conftest import all_runtimes

Row = collections.namedtuple("Row", "name kind build")
RNG = np.random.default_rng(21)
WORDS = np.array(["red", "green", "blue", "purple", "", "red"])


def _f32(*shape):
    return RNG.random(shape, dtype=np.float32)


def _session_row(graph_fn, feeds, **save_kwargs):
    """A row built as a TF1 graph in a 2.21 session: ``graph_fn(tf) -> (inputs, outputs, extra)``
    where ``extra`` holds more ``save_model`` arguments (``init_op=``) and ``run`` (ops to run
    before the answer, e.g. an insert into a mutable table)."""

    def build(tf, folder):
        graph = tf.Graph()
        with graph.as_default():
            inputs, outputs, extra = graph_fn(tf)
            sess = tf.compat.v1.Session(graph=graph)
            for op in extra.pop("run_first", []):  # variables initialised from others, in order
                sess.run(op)
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(tf.compat.v1.tables_initializer())
            for op in extra.pop("run", []):
                sess.run(op)
            expected = sess.run(outputs, {inputs[k]: v for k, v in feeds.items()})
        kwargs = dict(inputs=inputs, outputs=outputs, **save_kwargs, **extra)
        return sess, kwargs, {"serving_default": feeds}, {"serving_default": expected}

    return build


def _placeholder(tf, dtype, shape, name):
    return tf.compat.v1.placeholder(dtype, shape, name=name)


# --------------------------------------------------------------------------- stateful constructs


def _shared_tensor_tables_graph(tf):
    s = _placeholder(tf, tf.string, [None], "s")
    keys = tf.constant(["red", "green", "blue"])
    tables = [
        tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.constant([0, 1, 2], tf.int64)), -1,
        ) for _ in range(2)
    ]
    for table in tables:  # one explicit shared_name: what TF1 code sharing a table writes
        table.resource_handle.op._set_attr("shared_name", tf.compat.v1.AttrValue(s=b"colors"))
    return {"s": s}, {"ids": tables[0].lookup(s) + 10 * tables[1].lookup(s)}, {}


def _hash_and_index_tables_graph(tf):
    s = _placeholder(tf, tf.string, [None], "s")
    vocab = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(["red", "green"]), tf.constant([0, 1], tf.int64)),
        num_oov_buckets=3,
    )
    from tensorflow.python.ops import lookup_ops  # TF1's index tables (feature columns use them)

    index = lookup_ops.index_table_from_tensor(tf.constant(["blue", "red"]), num_oov_buckets=2)
    reverse = lookup_ops.index_to_string_table_from_tensor(tf.constant(["a", "b", "c"]), "?")
    ids = vocab.lookup(s) + 100 * index.lookup(s)
    return {"s": s}, {"ids": ids, "names": reverse.lookup(index.lookup(s))}, {}


def _mutable_table_graph(tf):
    s = _placeholder(tf, tf.string, [None], "s")
    table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=-7)
    insert = table.insert(tf.constant(["red", "blue"]), tf.constant([5, 9], tf.int64))
    init = tf.group(insert, name="fill_mutable_table")
    return {"s": s}, {"ids": table.lookup(s)}, {"init_op": init, "run": [init]}


def _variables_from_variables_graph(tf):
    x = _placeholder(tf, tf.float32, [None, 2], "x")
    w = tf.compat.v1.get_variable("w", initializer=np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), use_resource=False)
    w2 = tf.compat.v1.get_variable("w2", initializer=tf.identity(w) * 2.0 + 1.0, use_resource=False)
    r = tf.compat.v1.get_variable("r", initializer=tf.constant([0.5, -0.5]), use_resource=True)
    r2 = tf.compat.v1.get_variable("r2", initializer=r.read_value() * 3.0 + w2[0], use_resource=True)
    return {"x": x}, {"y": tf.matmul(x, w2) + r2}, {"run_first": [w.initializer, r.initializer, w2.initializer]}


def _estimator_folder(init):
    def build(tf, folder):
        from support.estimator_models import build_estimator_saved_model, original_outputs, serialized_examples

        path = build_estimator_saved_model(tf, os.path.join(folder, "export"), init=init)
        examples = serialized_examples(tf, _f32(4, 3), ["red", "blue", "violet", "green"])
        feeds = {"serving_default": {"inputs": examples}, "predict": {"examples": examples}}
        expected = {s: original_outputs(tf, path, s, examples) for s in feeds}
        return path, {}, feeds, expected

    return build


def _old(tf_version, name):
    def build(tf, folder):
        from support.old_models import old_model

        model = old_model(tf_version, name)
        return model.export_dir, {}, model.feeds, model.expected

    return build


# --------------------------------------------------------------------------- rewrites


def _raw_graph(op_fn, specs, feeds):
    """A session row around raw ops: ``op_fn(tf, *placeholders) -> output``."""

    def graph_fn(tf):
        placeholders = {k: _placeholder(tf, dtype, shape, k) for k, (dtype, shape) in specs.items()}
        return placeholders, {"y": op_fn(tf, *placeholders.values())}, {}

    return _session_row(graph_fn, feeds)


def _select_unknown_rank(tf, c, t, e):
    return tf.raw_ops.SelectV2(condition=c, t=t, e=e)


def _parse_example_v2(tf, serialized):
    parsed = tf.io.parse_example(serialized, {
        "x": tf.io.FixedLenFeature([2], tf.float32), "w": tf.io.VarLenFeature(tf.string),
    })
    return parsed["x"] * 2.0 + tf.cast(tf.sparse.reduce_sum(tf.sparse.map_values(tf.strings.length, parsed["w"]), 1, keepdims=True), tf.float32)


def _examples():
    import tensorflow as tf

    out = []
    for i in range(3):
        feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[i, -i / 2]))}
        if i:
            feature["w"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ab"] * i))
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return np.array(out, dtype=object)


def _segment_mean(tf, data, ids):
    return tf.raw_ops.SparseSegmentMean(
        data=data, indices=tf.range(tf.shape(ids, out_type=tf.int64)[0]), segment_ids=ids
    )


def _fused_batch_norm_v3(tf, x):
    return tf.raw_ops.FusedBatchNormV3(
        x=x, scale=tf.constant([1.5, 0.5]), offset=tf.constant([0.1, -0.2]), mean=tf.constant([0.3, -0.1]),
        variance=tf.constant([0.9, 1.2]), epsilon=1e-3, is_training=False,
    )[0]


def _xla_grouped_conv(tf, x):
    w = RNG.random((3, 3, 2, 4), dtype=np.float32)
    return tf.function(jit_compile=True)(lambda x: tf.nn.conv2d(x, w, 1, "SAME"))(x)


def _channels_first(tf, x):
    w = RNG.random((3, 3, 2, 2), dtype=np.float32)
    y = tf.nn.conv2d(x, w, 1, "SAME", data_format="NCHW")
    return tf.nn.max_pool2d(y, 2, 1, "VALID", data_format="NCHW")


# --------------------------------------------------------------------------- rules


def _rule_row(rule, op_fn, shape):
    def build(tf, folder):
        path = os.path.join(folder, "plain")
        graph = tf.Graph()
        with graph.as_default():
            x = _placeholder(tf, tf.float32, shape, "x")
            y = tf.identity(op_fn(tf, x), name="y")
            feed = _f32(*([2] + shape[1:]))
            with tf.compat.v1.Session(graph=graph) as sess:
                builder = tf.compat.v1.saved_model.Builder(path)
                signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
                builder.add_meta_graph_and_variables(
                    sess, ["serve"], {"serving_default": signature}, strip_default_attrs=True,
                    clear_devices=True,
                )
                builder.save()
                expected = sess.run(y, {x: feed})
        return path, {"serving_default": {"x": feed}}, {"serving_default": {"y": expected}}, rule

    return build


ROWS = [
    # stateful constructs
    Row("shared file tables (TF 1.15 export)", "converted", _old("1.15", "shared_file_tables")),
    Row("shared file tables (TF 1.12 export)", "converted", _old("1.12", "shared_file_tables")),
    Row("shared tensor tables, main_op (TF 1.15 export)", "converted", _old("1.15", "shared_tensor_tables")),
    Row("shared tensor tables (2.21 session)", "converted", _session_row(_shared_tensor_tables_graph, {"s": WORDS})),
    Row("hash and index tables", "converted", _session_row(_hash_and_index_tables_graph, {"s": WORDS})),
    Row("mutable hash table filled by init_op", "converted", _session_row(_mutable_table_graph, {"s": WORDS})),
    Row("variables initialised from variables", "converted",
        _session_row(_variables_from_variables_graph, {"x": _f32(3, 2)})),
    Row("legacy_init_op + asset vocabulary", "converted", _estimator_folder("legacy_init_op")),
    Row("main_op + asset vocabulary", "converted", _estimator_folder("main_op")),
    # Estimators trained and exported by the old runtimes themselves (tests/support/old_runtime_models.py)
    # (TF 1.12's exports of the same four with MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1: CI time)
    *[
        Row(f"Estimator {name} (TF {version} export)", "converted", _old(version, name))
        for version in (("1.15", "1.12") if all_runtimes() else ("1.15",))
        for name in ("wide_deep", "linear_raw", "dnn_shared_embeddings", "regressor_raw")
    ],
    # rewrites (graph/rewrite/)
    Row("rewrite SelectV2 (known rank)", "converted", _raw_graph(
        _select_unknown_rank, {"c": ("bool", [None, 1]), "t": ("float32", [None, 3]), "e": ("float32", [])},
        {"c": RNG.random((4, 1)) > 0.5, "t": _f32(4, 3), "e": np.float32(-1)})),
    Row("rewrite SelectV2 (unknown rank)", "converted", _raw_graph(
        _select_unknown_rank, {"c": ("bool", None), "t": ("float32", None), "e": ("float32", None)},
        {"c": RNG.random((3, 1)) > 0.5, "t": _f32(3, 4), "e": _f32(4)})),
    Row("rewrite BatchMatMulV2", "converted", _raw_graph(
        lambda tf, a, b: tf.raw_ops.BatchMatMulV2(x=a, y=b),
        {"a": ("float32", [None, 1, 3, 4]), "b": ("float32", [2, 4, 5])}, {"a": _f32(3, 1, 3, 4), "b": _f32(2, 4, 5)})),
    Row("rewrite Einsum", "converted", _raw_graph(
        lambda tf, a, b: tf.einsum("btnh,bsnh->bnts", a, b),
        {"a": ("float32", [None, 3, 2, 4]), "b": ("float32", [None, 5, 2, 4])}, {"a": _f32(2, 3, 2, 4), "b": _f32(2, 5, 2, 4)})),
    Row("rewrite LeakyRelu", "converted", _raw_graph(
        lambda tf, a: tf.nn.leaky_relu(a, 0.3), {"a": ("float32", [None, 3])}, {"a": _f32(4, 3) - 0.5})),
    Row("rewrite ParseExampleV2", "converted", _raw_graph(
        _parse_example_v2, {"examples": ("string", [None])}, {"examples": _examples()})),
    Row("rewrite SparseSegmentMean on int64 indices and segment ids", "converted", _raw_graph(
        _segment_mean, {"data": ("float32", [None, 3]), "ids": ("int64", [None])},
        {"data": _f32(5, 3), "ids": np.array([0, 0, 1, 2, 2], np.int64)})),
    Row("rewrite FusedBatchNormV3", "converted", _raw_graph(
        _fused_batch_norm_v3, {"x": ("float32", [None, 3, 3, 2])}, {"x": _f32(2, 3, 3, 2)})),
    Row("rewrite XLA must-compile + grouped Conv2D", "converted", _raw_graph(
        _xla_grouped_conv, {"x": ("float32", [None, 5, 5, 4])}, {"x": _f32(2, 5, 5, 4)})),
    Row("rewrite channels-first Conv2D/MaxPool", "converted", _raw_graph(
        _channels_first, {"x": ("float32", [None, 2, 5, 5])}, {"x": _f32(2, 2, 5, 5)})),
    # rules (runtimes/semantic.py), on plain graphs no rewrite touched
    Row("rule grouped-convolution-on-cpu", "rule", _rule_row(
        "grouped-convolution-on-cpu",
        lambda tf, x: tf.raw_ops.Conv2D(input=x, filter=tf.ones([3, 3, 2, 4]), strides=[1] * 4, padding="SAME"),
        [None, 5, 5, 4])),
    Row("rule channels-first-on-cpu", "rule", _rule_row(
        "channels-first-on-cpu",
        lambda tf, x: tf.raw_ops.Conv2D(
            input=x, filter=tf.ones([3, 3, 4, 2]), strides=[1] * 4, padding="SAME", data_format="NCHW"),
        [None, 4, 5, 5])),
    # Keras' Conv2D(groups>1): an XLA call whose body is a grouped convolution (an elementwise
    # body runs in 1.14/1.15 too: the rule is about what their CPU kernels refuse).
    Row("rule xla-must-compile", "rule", _rule_row("xla-must-compile", _xla_grouped_conv, [None, 5, 5, 4])),
]
