"""SavedModels as Estimator's ``export_saved_model`` wrote them, built with ``tf.compat.v1``.

What Estimator-era exports hold, mirrored op by op: a string ``input_example_tensor``
placeholder parsed by ``ParseExample`` (the TF 1.x op; ``parse_v2=True`` uses TF 2's
``ParseExampleV2``) with dense defaults, a vocabulary file under ``assets/`` read by a
``HashTableV2`` that ``legacy_init_op`` (or ``main_op``) fills, ``global_step`` beside the
weights, ops pinned to ``/device:GPU:0`` (``clear_devices=False``), and ``classify``,
``regress`` and ``predict`` SignatureDefs, one keyed by its method name
(``tensorflow/serving/regress``) as many TF Serving deployments did.
"""

import os

import numpy as np

VOCABULARY = ["red", "green", "blue"]
FEATURES = 3


def build_estimator_saved_model(tf, path, parse_v2=False, init="legacy_init_op", gpu_pinned=True):
    """Writes the SavedModel to ``path``; returns ``(path, example_fn)``.

    ``example_fn(xs, colors)`` serializes ``tf.train.Example``\\s (``xs``: ``[n, FEATURES]``
    floats, ``colors``: ``n`` words) as the model's clients send them.
    """
    vocab_src = os.path.join(os.path.dirname(path), "vocab_src.txt")
    with open(vocab_src, "w") as f:
        f.write("\n".join(VOCABULARY) + "\n")
    rng = np.random.default_rng(7)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.train.get_or_create_global_step()
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
        if parse_v2:
            parsed = tf.io.parse_example(serialized, {
                "x": tf.io.FixedLenFeature([FEATURES], tf.float32),
                "color": tf.io.FixedLenFeature([], tf.string, default_value=""),
            })
            x, color = parsed["x"], parsed["color"]
        else:
            color, x = tf.raw_ops.ParseExample(
                serialized=serialized,
                names=tf.constant([], tf.string),
                sparse_keys=[],
                dense_keys=[tf.constant("color"), tf.constant("x")],
                dense_defaults=[tf.constant("", tf.string), tf.zeros([0], tf.float32)],
                sparse_types=[],
                dense_shapes=[[], [FEATURES]],
            ).dense_values
        asset = tf.constant(vocab_src, name="vocab_path")
        tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS, asset)
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                asset, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            -1,
        )
        color_id = table.lookup(color)
        device = "/device:GPU:0" if gpu_pinned else ""
        with tf.device(device):
            one_hot = tf.one_hot(color_id, len(VOCABULARY), dtype=tf.float32)
            features = tf.concat([x, one_hot], 1)
            w = tf.compat.v1.get_variable(
                "dnn/logits/kernel", use_resource=False, initializer=rng.standard_normal((FEATURES + 3, 2)).astype(np.float32)
            )
            b = tf.compat.v1.get_variable("dnn/logits/bias", use_resource=False, initializer=np.array([0.1, -0.2], np.float32))
            logits = tf.nn.bias_add(tf.matmul(features, w), b, name="logits")
            probabilities = tf.nn.softmax(logits, name="probabilities")
            w_r = tf.compat.v1.get_variable(
                "linear/kernel", use_resource=False, initializer=rng.standard_normal((FEATURES + 3, 1)).astype(np.float32)
            )
            prediction = tf.identity(tf.matmul(features, w_r), name="predictions")
        class_ids = tf.argmax(logits, 1, name="class_ids")
        classes = tf.constant([["0", "1"]])
        classes = tf.tile(classes, tf.stack([tf.shape(logits)[0], 1]), name="classes")
        classify = tf.compat.v1.saved_model.classification_signature_def(serialized, classes, probabilities)
        regress = tf.compat.v1.saved_model.regression_signature_def(serialized, prediction)
        predict = tf.compat.v1.saved_model.predict_signature_def(
            {"examples": serialized},
            {"probabilities": probabilities, "class_ids": tf.expand_dims(class_ids, 1), "logits": logits},
        )
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True)  # GPU pins on a CPU machine
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            sess.run([tf.compat.v1.global_variables_initializer(), tf.compat.v1.tables_initializer()])
            builder = tf.compat.v1.saved_model.Builder(path)
            init_op = tf.group(tf.compat.v1.tables_initializer(), name="legacy_init_op")
            builder.add_meta_graph_and_variables(
                sess,
                ["serve"],
                signature_def_map={
                    "serving_default": classify,
                    "classification": classify,
                    "tensorflow/serving/regress": regress,
                    "predict": predict,
                },
                assets_collection=tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS),
                **{init: init_op},
                clear_devices=not gpu_pinned,
            )
            builder.save()
    os.remove(vocab_src)
    return path


def serialized_examples(tf, xs, colors):
    """``tf.train.Example`` protos as Estimator clients build them, serialized (object array)."""
    out = []
    for x, color in zip(xs, colors):
        example = tf.train.Example(features=tf.train.Features(feature={
            "x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in x])),
            "color": tf.train.Feature(bytes_list=tf.train.BytesList(value=[color.encode()])),
        }))
        out.append(example.SerializeToString())
    return np.array(out, dtype=object)


def original_outputs(tf, path, signature, examples):
    """The source SavedModel's own answers, from TF's TF1 loader: ``{output key: array}``."""
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path, clear_devices=True)
        sig = meta.signature_def[signature]
        keys = sorted(sig.outputs)
        (key,) = sig.inputs
        values = sess.run([sig.outputs[k].name for k in keys], {sig.inputs[key].name: examples})
    return dict(zip(keys, values))


def build_feature_column_saved_model(tf, path):
    """An Estimator-style DNN over ``tf.compat.v1.feature_column``\\s, written to ``path``.

    ``x`` (numeric, 3), ``color`` (a vocabulary *file* with one OOV bucket, ``embedding_column``
    of 4, mean) and ``tags`` (hashed, variable length, ``embedding_column`` of 3, sqrtn) go through
    ``make_parse_example_spec``/``parse_example`` and ``input_layer`` into a two-layer DNN, with
    ``classify``, ``regress`` and ``predict`` SignatureDefs and a ``legacy_init_op``.
    """
    fc = tf.compat.v1.feature_column
    vocab_src = os.path.join(os.path.dirname(path), "colors_src.txt")
    with open(vocab_src, "w") as f:
        f.write("\n".join(VOCABULARY) + "\n")
    rng = np.random.default_rng(3)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.train.get_or_create_global_step()
        color = fc.categorical_column_with_vocabulary_file("color", vocab_src, num_oov_buckets=1)
        tags = fc.categorical_column_with_hash_bucket("tags", 20)
        columns = [
            fc.numeric_column("x", shape=[FEATURES]),
            fc.embedding_column(color, 4, initializer=tf.compat.v1.random_normal_initializer(seed=1)),
            fc.embedding_column(tags, 3, combiner="sqrtn", initializer=tf.compat.v1.random_normal_initializer(seed=2)),
        ]
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
        net = fc.input_layer(tf.compat.v1.io.parse_example(serialized, fc.make_parse_example_spec(columns)), columns)
        for i, units in enumerate([8, 2]):
            w = tf.compat.v1.get_variable(
                f"dnn/hiddenlayer_{i}/kernel", initializer=rng.standard_normal((int(net.shape[1]), units)).astype(np.float32)
            )
            b = tf.compat.v1.get_variable(f"dnn/hiddenlayer_{i}/bias", initializer=np.full(units, 0.1, np.float32))
            net = tf.nn.relu(tf.matmul(net, w) + b) if i == 0 else tf.matmul(net, w) + b
        logits = tf.identity(net, name="logits")
        probabilities = tf.nn.softmax(logits, name="probabilities")
        classes = tf.tile(tf.constant([["0", "1"]]), tf.stack([tf.shape(logits)[0], 1]))
        signatures = {
            "serving_default": tf.compat.v1.saved_model.classification_signature_def(serialized, classes, probabilities),
            "regression": tf.compat.v1.saved_model.regression_signature_def(serialized, logits[:, :1]),
            "predict": tf.compat.v1.saved_model.predict_signature_def(
                {"examples": serialized}, {"logits": logits, "probabilities": probabilities}
            ),
        }
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run([tf.compat.v1.global_variables_initializer(), tf.compat.v1.tables_initializer()])
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map=signatures,
                assets_collection=tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS),
                legacy_init_op=tf.group(tf.compat.v1.tables_initializer(), name="legacy_init_op"),
            )
            builder.save()
    os.remove(vocab_src)
    return path


def feature_column_examples(tf, n=5):
    """Serialized examples for :func:`build_feature_column_saved_model`: a word out of the
    vocabulary, rows with no ``tags`` and rows with one to three."""
    rng = np.random.default_rng(0)
    words = ["red", "green", "blue", "purple", "red"]
    out = []
    for i in range(n):
        feature = {
            "x": tf.train.Feature(float_list=tf.train.FloatList(value=rng.standard_normal(FEATURES).tolist())),
            "color": tf.train.Feature(bytes_list=tf.train.BytesList(value=[words[i % len(words)].encode()])),
        }
        if i % 2 == 0:
            feature["tags"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", b"b", b"c"][: i % 3 + 1]))
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return np.array(out, dtype=object)
