"""SavedModels written by the old TensorFlow runtimes themselves (run with THEIR interpreter).

Usage (by ``tests/support/old_models.py``, which caches the result)::

    <runtime>/bin/python tests/support/old_runtime_models.py OUT_DIR NAME [NAME ...]

For each NAME it writes ``OUT_DIR/NAME/export`` (the SavedModel, as that TensorFlow wrote it),
``OUT_DIR/NAME/feeds.npz`` (``<signature>/<input key>`` arrays a client sends) and
``OUT_DIR/NAME/expected.npz`` (what that TensorFlow's own loader answered), in the ``.npz``
layout of ``mlflow_eas_savedmodel/runtimes/_npz_format.py``. Python 3.6 syntax, TF 1.12 and
1.15 APIs (``tf.contrib.lookup``, ``tf.estimator``), nothing of this project but that format.

Models: ``shared_file_tables`` (issue 21's smallest case: two ``index_table_from_file`` on one
file, one ``shared_name``), ``shared_tensor_tables`` (two ``index_table_from_tensor`` with the
same explicit ``shared_name``), and Estimators trained a few steps and exported:
``wide_deep`` (``DNNLinearCombinedClassifier``, a vocabulary-file column in both parts, crossed
and hashed columns, partitioned input layer, parsing receiver), ``linear_raw``
(``LinearClassifier``, vocabulary-list, hashed and crossed columns, raw receiver),
``dnn_shared_embeddings`` (``DNNClassifier``, ``shared_embedding_columns`` over two
vocabulary-list columns, parsing receiver), ``regressor_raw`` (``DNNRegressor``, numeric and an
embedded vocabulary file, raw receiver).
"""
from __future__ import print_function

import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import warnings  # noqa: E402

warnings.simplefilter("ignore")

import numpy as np  # noqa: E402

# tests/support/ -> the repository root: this script runs in an old runtime's own interpreter,
# which has neither this package nor tests/ on its path.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "mlflow_eas_savedmodel", "runtimes"))
from _npz_format import array_name, pack_arrays  # noqa: E402

import tensorflow as tf  # noqa: E402

tf.logging.set_verbosity(tf.logging.ERROR)

COLORS = ["red", "green", "blue"]
SIZES = ["S", "M", "L", "XL"]
WORDS = ["red", "green", "blue", "purple", "", "red"]


def _save(path, arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **pack_arrays(arrays))


def _vocab_file(folder, name, words):
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        fh.write("\n".join(words) + "\n")
    return path


def _run_export(export_dir, feeds):
    """The export's own answers, from this TensorFlow's loader: ``{sig/key: array}``."""
    out = {}
    graph = tf.Graph()
    with tf.Session(graph=graph) as sess:
        meta = tf.saved_model.loader.load(sess, ["serve"], export_dir)
        for sig_name, sig_feeds in feeds.items():
            sig = meta.signature_def[sig_name]
            keys = sorted(sig.outputs)
            values = sess.run([sig.outputs[k].name for k in keys],
                              {sig.inputs[k].name: v for k, v in sig_feeds.items()})
            for k, v in zip(keys, values):
                out[array_name(sig_name, k)] = v
    return out


# --------------------------------------------------------------------------- shared tables


def shared_file_tables(folder):
    export = os.path.join(folder, "export")
    vocab = _vocab_file(folder, "v.txt", COLORS)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.string, [None], name="x")
        t1 = tf.contrib.lookup.index_table_from_file(vocab, num_oov_buckets=0, default_value=-1)
        t2 = tf.contrib.lookup.index_table_from_file(vocab, num_oov_buckets=0, default_value=-1)
        y = tf.identity(t1.lookup(x) + 10 * t2.lookup(x), name="y")
        info = tf.saved_model.utils.build_tensor_info
        sig = tf.saved_model.signature_def_utils.build_signature_def(
            {"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict")
        with tf.Session(graph=graph) as sess:
            sess.run(tf.tables_initializer())
            builder = tf.saved_model.builder.SavedModelBuilder(export)
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": sig},
                assets_collection=tf.get_collection(tf.GraphKeys.ASSET_FILEPATHS),
                legacy_init_op=tf.tables_initializer())
            builder.save()
    os.remove(vocab)
    return export, {"serving_default": {"x": np.array(WORDS, dtype=object)}}


def shared_tensor_tables(folder):
    export = os.path.join(folder, "export")
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.string, [None], name="x")
        keys = tf.constant(COLORS)
        t1 = tf.contrib.lookup.index_table_from_tensor(keys, default_value=-1, name="t1")
        t2 = tf.contrib.lookup.HashTable(
            tf.contrib.lookup.KeyValueTensorInitializer(keys, tf.constant([0, 1, 2], tf.int64)),
            -1, shared_name="colors", name="t2")
        t3 = tf.contrib.lookup.HashTable(
            tf.contrib.lookup.KeyValueTensorInitializer(keys, tf.constant([0, 1, 2], tf.int64)),
            -1, shared_name="colors", name="t3")
        y = tf.identity(t1.lookup(x) + 10 * t2.lookup(x) + 100 * t3.lookup(x), name="y")
        info = tf.saved_model.utils.build_tensor_info
        sig = tf.saved_model.signature_def_utils.build_signature_def(
            {"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict")
        with tf.Session(graph=graph) as sess:
            sess.run(tf.tables_initializer())
            builder = tf.saved_model.builder.SavedModelBuilder(export)
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": sig},
                main_op=tf.tables_initializer())
            builder.save()
    return export, {"serving_default": {"x": np.array(WORDS, dtype=object)}}


# --------------------------------------------------------------------------- Estimators


def _rows(n=32, seed=0):
    rng = np.random.RandomState(seed)
    return {
        "x": rng.randn(n, 2).astype(np.float32),
        "color": np.array([COLORS[i % 3] if i % 7 else "purple" for i in range(n)], dtype=object),
        "size": np.array([SIZES[i % 4] for i in range(n)], dtype=object),
        "tag": np.array(["t%d" % (i % 5) for i in range(n)], dtype=object),
        "label": (rng.rand(n) > 0.5).astype(np.int64),
        "target": rng.randn(n).astype(np.float32),
    }


def _input_fn(rows, label):
    def fn():
        features = {k: tf.constant(v if v.dtype != object else v.astype(bytes))
                    for k, v in rows.items() if k not in ("label", "target")}
        return features, tf.constant(rows[label])
    return fn


def _examples(rows, n=6):
    out = []
    for i in range(n):
        feature = {
            "x": tf.train.Feature(float_list=tf.train.FloatList(value=rows["x"][i].tolist())),
            "color": tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows["color"][i].encode()])),
            "size": tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows["size"][i].encode()])),
            "tag": tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows["tag"][i].encode()])),
        }
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return np.array(out, dtype=object)


def _export(estimator, folder, receiver_fn):
    base = os.path.join(folder, "exports")
    export_fn = getattr(estimator, "export_saved_model", None) or estimator.export_savedmodel
    path = export_fn(base, receiver_fn)
    path = path.decode() if isinstance(path, bytes) else path
    export = os.path.join(folder, "export")
    shutil.move(path, export)
    shutil.rmtree(base)
    return export


def _feeds(export, rows, n=6):
    """Every SignatureDef of the export fed as its clients do: serialized ``tf.Example``\\s for
    a parsing receiver's one string input, the raw features by key otherwise."""
    examples = _examples(rows, n)
    graph = tf.Graph()
    with tf.Session(graph=graph) as sess:
        meta = tf.saved_model.loader.load(sess, ["serve"], export)
    feeds = {}
    for name, sig in meta.signature_def.items():
        if list(sig.inputs) in (["inputs"], ["examples"]):
            feeds[name] = {list(sig.inputs)[0]: examples}
        else:
            feeds[name] = {k: rows[k][:n] for k in sig.inputs}
    return feeds


def _raw_receiver(keys):
    with tf.Graph().as_default():  # only their dtypes and shapes are used
        placeholders = {
            "x": tf.placeholder(tf.float32, [None, 2], name="x"),
            "color": tf.placeholder(tf.string, [None], name="color"),
            "size": tf.placeholder(tf.string, [None], name="size"),
            "tag": tf.placeholder(tf.string, [None], name="tag"),
        }
    return tf.estimator.export.build_raw_serving_input_receiver_fn({k: placeholders[k] for k in keys})


def _train(estimator, rows, label, steps=5):
    estimator.train(_input_fn(rows, label), steps=steps)
    return estimator


def wide_deep(folder):
    fc = tf.feature_column
    vocab = _vocab_file(folder, "colors.txt", COLORS)
    color = fc.categorical_column_with_vocabulary_file("color", vocab, num_oov_buckets=1)
    tag = fc.categorical_column_with_hash_bucket("tag", 8)
    size = fc.categorical_column_with_vocabulary_list("size", SIZES)
    crossed = fc.crossed_column([color, "tag"], 16)
    linear = [color, tag, crossed]
    dnn = [fc.numeric_column("x", shape=[2]), fc.embedding_column(color, 3),
           fc.embedding_column(size, 2), fc.indicator_column(tag)]
    rows = _rows()
    est = tf.estimator.DNNLinearCombinedClassifier(
        model_dir=os.path.join(folder, "model_dir"), linear_feature_columns=linear,
        dnn_feature_columns=dnn, dnn_hidden_units=[4],
        input_layer_partitioner=tf.fixed_size_partitioner(2),
        config=tf.estimator.RunConfig(tf_random_seed=1))
    _train(est, rows, "label")
    spec = fc.make_parse_example_spec(linear + dnn)
    export = _export(est, folder, tf.estimator.export.build_parsing_serving_input_receiver_fn(spec))
    shutil.rmtree(os.path.join(folder, "model_dir"))
    os.remove(vocab)
    return export, _feeds(export, rows)


def linear_raw(folder):
    fc = tf.feature_column
    color = fc.categorical_column_with_vocabulary_list("color", COLORS, num_oov_buckets=2)
    tag = fc.categorical_column_with_hash_bucket("tag", 8)
    crossed = fc.crossed_column([color, "tag"], 16)
    rows = _rows(seed=1)
    est = tf.estimator.LinearClassifier(
        [color, tag, crossed, fc.numeric_column("x", shape=[2])], n_classes=3,
        model_dir=os.path.join(folder, "model_dir"), config=tf.estimator.RunConfig(tf_random_seed=1))
    rows["label"] = rows["label"] + (rows["x"][:, 0] > 1).astype(np.int64)
    _train(est, rows, "label")
    keys = ["x", "color", "tag"]
    export = _export(est, folder, _raw_receiver(keys))
    shutil.rmtree(os.path.join(folder, "model_dir"))
    return export, _feeds(export, rows)


def dnn_shared_embeddings(folder):
    fc = tf.feature_column
    color = fc.categorical_column_with_vocabulary_list("color", COLORS + SIZES)
    size = fc.categorical_column_with_vocabulary_list("size", COLORS + SIZES)
    shared = fc.shared_embedding_columns([color, size], 3)
    rows = _rows(seed=2)
    columns = [fc.numeric_column("x", shape=[2])] + list(shared)
    est = tf.estimator.DNNClassifier(
        [5, 3], columns, model_dir=os.path.join(folder, "model_dir"),
        config=tf.estimator.RunConfig(tf_random_seed=1))
    _train(est, rows, "label")
    spec = fc.make_parse_example_spec(columns)
    export = _export(est, folder, tf.estimator.export.build_parsing_serving_input_receiver_fn(spec))
    shutil.rmtree(os.path.join(folder, "model_dir"))
    return export, _feeds(export, rows)


def regressor_raw(folder):
    fc = tf.feature_column
    vocab = _vocab_file(folder, "sizes.txt", SIZES)
    size = fc.categorical_column_with_vocabulary_file("size", vocab)
    rows = _rows(seed=3)
    est = tf.estimator.DNNRegressor(
        [4], [fc.numeric_column("x", shape=[2]), fc.embedding_column(size, 2)],
        model_dir=os.path.join(folder, "model_dir"), config=tf.estimator.RunConfig(tf_random_seed=1))
    _train(est, rows, "target")
    keys = ["x", "size"]
    export = _export(est, folder, _raw_receiver(keys))
    shutil.rmtree(os.path.join(folder, "model_dir"))
    os.remove(vocab)
    return export, _feeds(export, rows)


MODELS = {f.__name__: f for f in (
    shared_file_tables, shared_tensor_tables, wide_deep, linear_raw, dnn_shared_embeddings, regressor_raw)}


def main(argv):
    out_dir, names = argv[0], argv[1:]
    for name in names:
        final = os.path.join(out_dir, name)
        if os.path.isdir(final):
            continue
        work = tempfile.mkdtemp(dir=out_dir, prefix=".%s-" % name)
        export, feeds = MODELS[name](work)
        _save(os.path.join(work, "feeds.npz"),
              {array_name(s, k): v for s, f in feeds.items() for k, v in f.items()})
        _save(os.path.join(work, "expected.npz"), _run_export(export, feeds))
        os.rename(work, final)
        print("built", name, tf.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
