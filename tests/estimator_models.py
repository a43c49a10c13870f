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
