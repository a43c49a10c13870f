"""The SavedModel folders serving teams receive: Keras 3 ``model.export()`` and ``tf.saved_model.save``.

Each row exports a model the way its owner would, converts the folder with ``save_model`` and
compares the artifact's answers with the original model's, in the handle and in TF's TF1 loader
by the saved SignatureDef's tensor names (``tests/support/round_trips.py``). Keras' ``export()`` writes
two signatures (``serve`` and ``serving_default``), so the converter merges two frozen graphs
under name prefixes; the embedding, batch-norm, lookup and two-tower models carry colocation
hints (``_class: loc:@ids``) that used to keep the unprefixed name, and the merged graph did not
import (issue 21). The plain MLP of ``test_source_saved_model.py`` has no such hint, which is
why no test caught it.
"""

import contextlib

import numpy as np
import pytest
from support.round_trips import Case, Export, Predict, params, run

RNG_SEED = 0


def _keras():
    import keras

    keras.utils.set_random_seed(RNG_SEED)
    return keras


def _export(model, tmp_path, name):
    folder = str(tmp_path / name)
    model.export(folder, verbose=False)
    return folder


def _both_keras_signatures(inputs, expected, rtol=1e-5, atol=1e-6):
    return [
        Predict(inputs, {None: expected}, signature=name, rtol=rtol, atol=atol)
        for name in ("serve", "serving_default")
    ]


@contextlib.contextmanager
def _embedding(tf, tmp_path):
    keras = _keras()
    ids = keras.Input((6,), dtype="int32", name="ids")
    x = keras.layers.Embedding(1000, 8)(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(ids, keras.layers.Dense(2)(x))
    batch = np.random.default_rng(1).integers(0, 1000, (5, 6)).astype(np.int32)
    yield Export(
        _export(model, tmp_path, "embedding"),
        predicts=_both_keras_signatures(batch, model(batch).numpy()),
        predicts_in_tf1_loader=True,
    )


@contextlib.contextmanager
def _cnn_batch_norm(tf, tmp_path):
    keras = _keras()
    img = keras.Input((8, 8, 3), name="img")
    x = keras.layers.Conv2D(4, 3, padding="same")(img)
    bn = keras.layers.BatchNormalization()
    x = keras.layers.ReLU()(bn(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(img, keras.layers.Dense(3)(x))
    rng = np.random.default_rng(2)
    # Moving statistics that are not the identity, so a dropped batch norm would show.
    bn.set_weights([rng.random(4, np.float32) + 0.5, rng.random(4, np.float32), rng.random(4, np.float32),
                    rng.random(4, np.float32) + 0.5])
    batch = rng.random((4, 8, 8, 3), np.float32)
    yield Export(
        _export(model, tmp_path, "cnn"),
        predicts=_both_keras_signatures(batch, model(batch, training=False).numpy()),
        predicts_in_tf1_loader=True,
    )


@contextlib.contextmanager
def _string_lookup(tf, tmp_path):
    keras = _keras()
    words = keras.Input((3,), dtype="string", name="words")
    x = keras.layers.StringLookup(vocabulary=["red", "green", "blue"])(words)
    x = keras.layers.Embedding(4, 5)(x)
    model = keras.Model(words, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    batch = np.array([["red", "blue", "pink"], ["green", "green", "red"]], dtype=object)
    yield Export(
        _export(model, tmp_path, "lookup"),
        predicts=_both_keras_signatures(batch, model(tf.constant(batch.astype(str))).numpy()),
        predicts_in_tf1_loader=True,
    )


@contextlib.contextmanager
def _two_tower(tf, tmp_path):
    keras = _keras()
    user = keras.Input((1,), dtype="int32", name="user_id")
    item = keras.Input((1,), dtype="int32", name="item_id")
    u = keras.layers.Flatten()(keras.layers.Embedding(50, 8)(user))
    v = keras.layers.Flatten()(keras.layers.Embedding(80, 8)(item))
    u = keras.layers.Dense(4)(u)
    v = keras.layers.Dense(4)(v)
    model = keras.Model([user, item], keras.layers.Dot(axes=1)([u, v]))
    rng = np.random.default_rng(3)
    feeds = {"user_id": rng.integers(0, 50, (6, 1)).astype(np.int32),
             "item_id": rng.integers(0, 80, (6, 1)).astype(np.int32)}
    yield Export(
        _export(model, tmp_path, "two_tower"),
        predicts=_both_keras_signatures(feeds, model([feeds["user_id"], feeds["item_id"]]).numpy()),
        predicts_in_tf1_loader=True,
    )


W = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0).astype(np.float32)


def _serialized_examples(tf, rows):
    return np.array([
        tf.train.Example(features=tf.train.Features(feature={
            "x": tf.train.Feature(float_list=tf.train.FloatList(value=list(row)))
        })).SerializeToString()
        for row in rows
    ], dtype=object)


@contextlib.contextmanager
def _module_with_example_signature(tf, tmp_path):
    """Two signatures on one variable: serialized ``tf.Example``s, and tensors plus a captured
    string constant of each rank (``tf.strings.join([prefix, words])``)."""

    class Served(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(W, name="w")
            # Eager constants the functions capture (the SavedModel keeps them as SavedConstant).
            self.prefixes = [tf.constant("id_"), tf.constant(["a_", "b_"]), tf.constant([["m", "n"], ["o", "p"]])]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def parse(self, examples):
            features = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([4], tf.float32)})
            return {"scores": tf.matmul(features["x"], self.w)}

        @tf.function(input_signature=[
            tf.TensorSpec([None, 4], tf.float32, name="x"),
            tf.TensorSpec([2], tf.string, name="words"),
        ])
        def predict(self, x, words):
            return {
                "scores": tf.matmul(x, self.w),
                "scalar_prefix": tf.strings.join([self.prefixes[0], words]),
                "vector_prefix": tf.strings.join([self.prefixes[1], words]),
                "matrix_prefix": tf.strings.join([self.prefixes[2], tf.stack([words, words])]),
            }

    module = Served()
    folder = str(tmp_path / "module")
    tf.saved_model.save(module, folder, signatures={"serving_default": module.predict, "parse": module.parse})
    x = np.random.default_rng(4).random((3, 4), np.float32)
    words = np.array(["p", "q"], dtype=object)
    yield Export(
        folder,
        predicts=[
            Predict(_serialized_examples(tf, x), {"scores": x @ W}, signature="parse", rtol=1e-5),
            Predict({"x": x, "words": words}, {"scores": x @ W}, signature="serving_default", rtol=1e-5),
            Predict(
                {"x": x, "words": words},
                {
                    "scalar_prefix": np.array([b"id_p", b"id_q"], dtype=object),
                    "vector_prefix": np.array([b"a_p", b"b_q"], dtype=object),
                    "matrix_prefix": np.array([[b"mp", b"nq"], [b"op", b"pq"]], dtype=object),
                },
                signature="serving_default",
            ),
        ],
        predicts_in_tf1_loader=True,
    )


KERAS_SIGNATURES = ["serve", "serving_default"]
STREAMED = ("weights streamed from the source's variables/ bundle",)

EXPORT_FOLDER_CASES = [
    Case("keras_export_embedding", _embedding, signatures=KERAS_SIGNATURES, variables_v2=True, notes=STREAMED),
    Case(
        "keras_export_cnn_batch_norm", _cnn_batch_norm, signatures=KERAS_SIGNATURES, variables_v2=True,
        notes=STREAMED,
    ),
    Case("keras_export_string_lookup", _string_lookup, signatures=KERAS_SIGNATURES, notes=STREAMED),
    Case("keras_export_two_tower", _two_tower, signatures=KERAS_SIGNATURES, variables_v2=True, notes=STREAMED),
    Case(
        "tf2_module_example_and_tensor_signatures",
        _module_with_example_signature,
        signatures=["parse", "serving_default"],
        conf_keys={("signature_defs", "serving_default", "outputs"): [
            "matrix_prefix", "scalar_prefix", "scores", "vector_prefix",
        ]},
        variables_v2=True,
        notes=STREAMED,
    ),
]


@pytest.mark.parametrize("case", params(EXPORT_FOLDER_CASES))
def test_export_folder_round_trip(case, request, tmp_path, tf):
    run(case, "saved_model", request, tmp_path, tf)
