"""The benchmark models and the ``prepare`` worker that saves every artifact the others load.

Models: ``mlp`` (4-16-3, the tests' model), ``cnn`` (MNIST size: 28x28x1, two conv layers and a
dense layer) and ``wide_mlp`` (square dense layers sized to a weight budget). Every worker loads
from local folders so that no timing includes a download from the tracking store.
"""

import math
import os

import numpy as np

MODEL_KINDS = ("mlp", "cnn")
INPUT_SHAPES = {"mlp": (4,), "cnn": (28, 28, 1)}
_SEED = 0


def build(kind):
    """A fresh, seeded Keras model of ``kind`` (``mlp`` or ``cnn``)."""
    import keras

    keras.utils.set_random_seed(_SEED)
    if kind == "mlp":
        inp = keras.Input((4,), name="image")
        hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inp)
        out = keras.layers.Dense(3, name="scores")(hidden)
    elif kind == "cnn":
        inp = keras.Input((28, 28, 1), name="image")
        x = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")(inp)
        x = keras.layers.MaxPooling2D(name="pool1")(x)
        x = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
        x = keras.layers.MaxPooling2D(name="pool2")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        out = keras.layers.Dense(10, name="scores")(x)
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return keras.Model(inp, out, name=kind)


def wide_mlp_width(weight_bytes):
    """The width ``d`` of :func:`build_wide_mlp` whose two ``d x d`` float32 kernels weigh ``weight_bytes``."""
    return max(8, int(math.sqrt(weight_bytes / 8)))


def build_wide_mlp(weight_bytes):
    """``d -> d -> d -> 10`` dense layers holding about ``weight_bytes`` of float32 weights."""
    import keras

    keras.utils.set_random_seed(_SEED)
    width = wide_mlp_width(weight_bytes)
    inp = keras.Input((width,), name="features")
    x = keras.layers.Dense(width, activation="relu", name="dense1")(inp)
    x = keras.layers.Dense(width, activation="relu", name="dense2")(x)
    out = keras.layers.Dense(10, name="scores")(x)
    return keras.Model(inp, out, name="wide_mlp")


def weights_nbytes(model):
    return int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights))


def example_batch(kind, batch_size, seed=1):
    """Deterministic float32 inputs for ``kind``."""
    return np.random.default_rng(seed).random((batch_size,) + INPUT_SHAPES[kind], dtype=np.float32)


def use_fresh_store(root):
    """Points MLflow at a new sqlite store under ``root`` and creates its experiment.

    The experiment is created here, untimed: the first use of a sqlite store runs MLflow's schema
    migrations (seconds), which are no part of any flavor's cost.
    """
    import mlflow

    os.makedirs(root, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(root, 'mlflow.db')}")
    experiment_id = mlflow.create_experiment(
        "bench", artifact_location="file://" + os.path.join(root, "artifacts")
    )
    mlflow.set_experiment(experiment_id=experiment_id)


def prepare(workdir, kinds):
    """Logs every model both ways, exports it with Keras, saves the identity model.

    Returns ``{kind: {"ours": dir, "mlflow_tf": dir, "keras_export": dir}, "identity": dir}``.
    """
    import mlflow
    import mlflow.tensorflow

    import mlflow_eas_savedmodel

    use_fresh_store(os.path.join(workdir, "store"))
    paths = {}
    for kind in kinds:
        model = build(kind)
        example = example_batch(kind, 2)
        out = os.path.join(workdir, "models", kind)
        os.makedirs(out)
        with mlflow.start_run():
            ours = mlflow_eas_savedmodel.log_model(model, name=f"{kind}-ours", input_example=example)
            # Requirements given: their inference costs seconds and changes nothing at predict.
            peer = mlflow.tensorflow.log_model(
                model,
                name=f"{kind}-mlflow-tf",
                input_example=example,
                pip_requirements=mlflow_eas_savedmodel.get_default_pip_requirements(),
            )
        paths[kind] = {
            "ours": mlflow.artifacts.download_artifacts(ours.model_uri, dst_path=os.path.join(out, "ours")),
            "mlflow_tf": mlflow.artifacts.download_artifacts(
                peer.model_uri, dst_path=os.path.join(out, "mlflow_tf")
            ),
            "keras_export": os.path.join(out, "keras_export"),
        }
        model.export(paths[kind]["keras_export"], verbose=False)
    identity = os.path.join(workdir, "models", "identity")
    mlflow.pyfunc.save_model(
        identity,
        python_model=os.path.join(os.path.dirname(__file__), "identity_model.py"),
        pip_requirements=["mlflow"],
    )
    paths["identity"] = identity
    return paths
