"""The multi-signature TF1 session models the serving tests share: one builder, named pieces.

A model is a map ``{SignatureDef name: piece}``; each piece (:data:`PIECES`) adds its
placeholders, variables and outputs to the graph under fixed tensor names, so the tests can
compute the expected answers with numpy from the constants here and address tensors by name
(``n:0``). The two models most tests serve are saved once per test session by fixtures in
``tests/conftest.py``:

* :data:`DECODER_MODEL` (``multi_signature_model``): float, float+int32 with two outputs,
  strings and an unknown-rank input; the fuzzers and the soak send it every kind of input.
* :data:`EAS_MODEL` (``eas_session_model``): ``serving_default`` (x float32 -> y float32,
  n int64, with an input example) and ``lookup`` (strings through a hash table); the EAS
  endpoint, warm-up and ``deployments run-local`` tests answer the official client with it.

Tests that need another mix (more work per call for the thread-safety test) build one from the
same pieces with :func:`save` or :func:`session`.
"""

import contextlib

import numpy as np

WEIGHTS = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10).astype(np.float32)  # image -> scores
EAS_WEIGHTS = (np.arange(6, dtype=np.float32).reshape(3, 2) / 7).astype(np.float32)  # x -> y
EAS_EXAMPLE = np.array([[1, 2, 3], [0, -1, 0.5]], np.float32)  # the EAS model's input example for x
TABLE = {"a": 1, "bb": 2}  # lookup: s -> ids, -1 for any other string


def _scores(tf):
    image = tf.compat.v1.placeholder(tf.float32, [None, 4], name="image")
    w = tf.compat.v1.get_variable("w", initializer=WEIGHTS)
    return {"image": image}, {"scores": tf.matmul(image, w, name="scores")}


def _deep_softmax(tf):
    """``image`` (64 wide) -> a 1024-unit hidden layer -> softmax ``scores``: real work per call."""
    rng = np.random.default_rng(0)
    image = tf.compat.v1.placeholder(tf.float32, [None, 64], name="image")
    w1 = tf.compat.v1.get_variable("w1", initializer=rng.standard_normal((64, 1024), np.float32))
    w2 = tf.compat.v1.get_variable("w2", initializer=rng.standard_normal((1024, 10), np.float32))
    hidden = tf.nn.relu(tf.matmul(image, w1))
    return {"image": image}, {"scores": tf.nn.softmax(tf.matmul(hidden, w2), name="scores")}


def _pair(tf, b_dtype="int32"):
    """``total = sum(a, axis=1) + b`` and ``doubled = a * 2``: two inputs of two dtypes."""
    a = tf.compat.v1.placeholder(tf.float32, [None, 2], name="a")
    b = tf.compat.v1.placeholder(b_dtype, [None], name="b")
    total = tf.add(tf.reduce_sum(a, axis=1), tf.cast(b, tf.float32), name="total")
    return {"a": a, "b": b}, {"total": total, "doubled": tf.multiply(a, 2.0, name="doubled")}


def _length(tf):
    words = tf.compat.v1.placeholder(tf.string, [None], name="words")
    return {"words": words}, {"length": tf.strings.length(words, name="length")}


def _upper(tf):
    words = tf.compat.v1.placeholder(tf.string, [None], name="words")
    return {"words": words}, {"upper": tf.strings.upper(words, name="upper")}


def _anything(tf):
    anything = tf.compat.v1.placeholder(tf.float32, None, name="anything")
    return {"anything": anything}, {"sum": tf.reduce_sum(anything, name="summed")}


def _xy(tf):
    """``y = x @ EAS_WEIGHTS`` and ``n``, the count of positive entries per row (int64)."""
    x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
    w = tf.compat.v1.get_variable("w", initializer=EAS_WEIGHTS)
    y = tf.identity(tf.matmul(x, w), name="y")
    n = tf.identity(tf.reduce_sum(tf.cast(x > 0, tf.int64), axis=1), name="n")
    return {"x": x}, {"y": y, "n": n}


def _table_lookup(tf, echo):
    s = tf.compat.v1.placeholder(tf.string, [None], name="s")
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(TABLE)), tf.constant(list(TABLE.values()), tf.int64)),
        -1,
    )
    outputs = {"ids": tf.identity(table.lookup(s), name="ids")}
    if echo:
        outputs["echo"] = tf.identity(s, name="echo")
    return {"s": s}, outputs


def _lookup(tf):
    """``ids`` of the strings ``s`` in :data:`TABLE` and ``echo``, the strings themselves."""
    return _table_lookup(tf, echo=True)


def _ids(tf):
    """``ids`` of the strings ``s`` in :data:`TABLE`, no string output."""
    return _table_lookup(tf, echo=False)


PIECES = {
    "scores": _scores,
    "deep_softmax": _deep_softmax,
    "pair": _pair,
    "pair_int64": lambda tf: _pair(tf, "int64"),
    "length": _length,
    "upper": _upper,
    "anything": _anything,
    "xy": _xy,
    "lookup": _lookup,
    "ids": _ids,
}
DECODER_MODEL = {"serving_default": "scores", "pair": "pair", "words": "length", "anything": "anything"}
EAS_MODEL = {"serving_default": "xy", "lookup": "lookup"}


@contextlib.contextmanager
def session(tf, model):
    """Yields ``(session, signatures)`` of ``model`` (``{name: piece}``), initialised, for
    ``save_model``/``log_model``'s ``signatures=``; closes the session after."""
    graph = tf.Graph()
    with graph.as_default():
        signatures = {}
        for name, piece in model.items():
            inputs, outputs = PIECES[piece](tf)
            signatures[name] = {"inputs": inputs, "outputs": outputs}
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            yield sess, signatures


def save(tf, path, model, **kwargs):
    """Saves ``model`` (``{name: piece}``) to ``path`` with ``save_model``; returns ``path``."""
    import mlflow_eas_savedmodel as mes

    with session(tf, model) as (sess, signatures):
        mes.save_model(sess, path, signatures=signatures, **kwargs)
    return path
