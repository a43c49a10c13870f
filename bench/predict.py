"""The ``predict`` worker: per-call latency of every way to run one model, in one process.

Candidates are timed in interleaved rounds (each round times a block of calls of every
candidate, in a shuffled order), so load from other processes hits them alike; a candidate's
figure is the median per-call time over the rounds. Every candidate's output is checked against ours first.

Raw TensorFlow candidates, the baseline being the fastest of them:

* ``tf.saved_model.load`` of the Keras export: its ``serving_default`` signature function and
  its restored ``serve`` function;
* the Keras model (loaded from ``mlflow.tensorflow``'s ``.keras`` file) called in a ``tf.function``;
* our SavedModel in a plain TF1 session: ``Session.make_callable`` and the C++ callable
  ``Session._make_callable_from_options``, both with default options.

Raw calls end with ``.numpy()``: every candidate returns numpy arrays, as a user needs them.
"""

import random
import time

import numpy as np

from bench.models import example_batch

OURS_PYFUNC = "ours: mlflow.pyfunc predict"
OURS_HANDLE = "ours: load_model(uri).predict"
PEER_PYFUNC = "mlflow.tensorflow pyfunc"
RAW_PREFIX = "raw: "
_BLOCK_SECONDS = 0.02


def _raw_candidates(paths):
    import tensorflow as tf
    from tensorflow.core.protobuf.config_pb2 import CallableOptions

    import mlflow.tensorflow

    from mlflow.models import Model

    from mlflow_eas_savedmodel.flavor_conf import FlavorConf

    loaded = tf.saved_model.load(paths["keras_export"])
    signature = loaded.signatures["serving_default"]
    (signature_output,) = signature.structured_outputs

    keras_model = mlflow.tensorflow.load_model(paths["mlflow_tf"])
    spec = tf.TensorSpec([None, *keras_model.input_shape[1:]], tf.float32)
    keras_fn = tf.function(lambda x: keras_model(x, training=False), input_signature=[spec])

    conf = FlavorConf.read(Model.load(paths["ours"]), paths["ours"])
    description = conf.signature_defs[conf.default_signature]
    (feed,) = [t["name"] for t in description["inputs"].values()]
    (fetch,) = [t["name"] for t in description["outputs"].values()]
    session = tf.compat.v1.Session(graph=tf.Graph())
    with session.graph.as_default():
        tf.compat.v1.saved_model.loader.load(session, ["serve"], conf.saved_model_path(paths["ours"]))
    make_callable = session.make_callable(
        session.graph.get_tensor_by_name(fetch), feed_list=[session.graph.get_tensor_by_name(feed)]
    )
    options_callable = session._make_callable_from_options(CallableOptions(feed=[feed], fetch=[fetch]))
    return {
        RAW_PREFIX + "SavedModel signature fn": lambda x: signature(tf.constant(x))[signature_output].numpy(),
        RAW_PREFIX + "restored serve tf.function": lambda x: loaded.serve(x).numpy(),
        RAW_PREFIX + "tf.function(model)": lambda x: keras_fn(x).numpy(),
        RAW_PREFIX + "Session.make_callable": make_callable,
        RAW_PREFIX + "Session C++ callable": lambda x: options_callable(x)[0],
    }


def _candidates(paths):
    import mlflow.pyfunc

    import mlflow_eas_savedmodel

    ours = mlflow.pyfunc.load_model(paths["ours"])
    handle = mlflow_eas_savedmodel.load_model(paths["ours"])
    (output_key,) = handle.signatures[handle.default_signature]["outputs"]
    peer = mlflow.pyfunc.load_model(paths["mlflow_tf"])
    candidates = {
        OURS_PYFUNC: ours.predict,
        OURS_HANDLE: lambda x: handle.predict(x)[output_key],
        PEER_PYFUNC: lambda x: np.asarray(peer.predict(x)),
    }
    candidates.update(_raw_candidates(paths))
    return candidates


def _calls_per_block(function, x):
    start = time.perf_counter()
    function(x)
    elapsed = time.perf_counter() - start
    return max(1, min(2000, int(_BLOCK_SECONDS / max(elapsed, 1e-7))))


def measure(paths, kind, batch_sizes, rounds):
    """``{batch size: {candidate: median seconds per call}}`` for model ``kind``."""
    candidates = _candidates(paths)
    results = {}
    for batch_size in batch_sizes:
        x = example_batch(kind, batch_size)
        expected = candidates[OURS_PYFUNC](x)
        for name, function in candidates.items():
            got = function(x)  # also the warm-up call
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=name)
        blocks = {name: _calls_per_block(f, x) for name, f in candidates.items()}
        times = {name: [] for name in candidates}
        order = list(candidates.items())
        shuffler = random.Random(batch_size)
        for _ in range(rounds):
            shuffler.shuffle(order)  # no candidate always runs right after the slow peer
            for name, function in order:
                n = blocks[name]
                start = time.perf_counter()
                for _ in range(n):
                    function(x)
                times[name].append((time.perf_counter() - start) / n)
        results[str(batch_size)] = {name: float(np.median(t)) for name, t in times.items()}
    return results
