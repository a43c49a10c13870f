"""``mlflow.models.evaluate(model_type="classifier")`` on a softmax Keras model logged with the flavor.

MLflow's classifier evaluator compares ``predict``'s output with the targets label by label, so
it needs class labels, not the (batch, classes) probabilities a softmax model returns. The
flavor's ``output="labels"`` option (``model_config`` at load, or ``params`` per call) makes
predict return the class indices (argmax); ``evaluate`` passes ``model_config`` through. The
data may be a DataFrame with a column named after the input, a DataFrame of numeric feature
columns, or plain arrays.

    .venv/bin/python examples/evaluate_classifier.py [WORK_DIR]

WORK_DIR (default: a temporary folder) receives the sqlite MLflow store.
"""

import os
import sys
import tempfile

import numpy as np


def main(work_dir):
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    import_tensorflow()  # TensorFlow first, without its start-up banners on stderr
    import keras
    import mlflow
    import pandas as pd

    import mlflow_eas_savedmodel as mes

    # Three Gaussian blobs in 4 features, and a small softmax classifier trained on them.
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 4)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    x = (centers[y] + rng.normal(0, 1, (300, 4))).astype(np.float32)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(hidden))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)

    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(work_dir, 'mlflow.db')}")
    mlflow.set_experiment("evaluate")
    results = {}
    with mlflow.start_run():
        info = mes.log_model(model, name="classifier", input_example=x[:2])
        # One column named after the model's input, each cell one example's feature vector.
        data = pd.DataFrame({"features": list(x), "label": y})
        results["named column"] = mlflow.models.evaluate(
            info.model_uri, data, targets="label", model_type="classifier",
            evaluators=["default"], model_config={"output": "labels"},
        )
    for form, features in (("feature columns", pd.DataFrame(x, columns=list("abcd"))), ("arrays", x)):
        with mlflow.start_run():
            # A DataFrame of numeric feature columns (in the model's order), or a plain array.
            data, targets = (features.assign(label=y), "label") if form != "arrays" else (x, y)
            results[form] = mlflow.models.evaluate(
                info.model_uri, data, targets=targets, model_type="classifier",
                evaluators=["default"], model_config={"output": "labels"},
            )

    expected = float(np.mean(np.argmax(model(x).numpy(), axis=1) == y))
    for form, result in results.items():
        accuracy = result.metrics["accuracy_score"]
        print(f"{form}: accuracy_score {accuracy:.4f} (from the Keras model: {expected:.4f})")
        if abs(accuracy - expected) > 1e-9:
            sys.exit(f"evaluate's accuracy on {form} differs from the Keras model's")
    # params per call give the same labels, and leaving the option out gives the probabilities.
    pyfunc_model = mlflow.pyfunc.load_model(info.model_uri)
    labels = pyfunc_model.predict(x[:5], params={"output": "labels"})
    np.testing.assert_array_equal(labels, np.argmax(pyfunc_model.predict(x[:5]), axis=1))
    print(f"labels of the first five rows: {labels.tolist()}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
