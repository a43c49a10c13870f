"""``mlflow.models.evaluate(model_type="regressor")`` on a Keras regressor logged with the flavor.

A Keras regressor's output has shape (batch, 1); MLflow's regressor evaluator wants one value
per example, shape (batch,). The flavor's ``output="values"`` option (``model_config`` at load,
or ``params`` per call) returns that; ``evaluate`` passes ``model_config`` through. The features
go in as MLflow users have them: a DataFrame of numeric columns with the target beside them, or
plain arrays.

    .venv/bin/python examples/evaluate_regressor.py [WORK_DIR]

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

    # House prices from four features, and a small regressor trained on them.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    y = (x @ np.array([3.0, -2.0, 0.5, 1.0]) + 10 + rng.normal(0, 0.1, 400)).astype(np.float32)
    keras.utils.set_random_seed(0)
    features = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(features)
    model = keras.Model(features, keras.layers.Dense(1, name="price")(hidden))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)

    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(work_dir, 'mlflow.db')}")
    mlflow.set_experiment("evaluate")
    expected = float(np.mean(np.abs(model(x).numpy()[:, 0] - y)))
    with mlflow.start_run():
        info = mes.log_model(model, name="regressor", input_example=x[:2])
        # A DataFrame of feature columns (any names, in the model's order) and the target.
        table = pd.DataFrame(x, columns=["rooms", "age", "distance", "area"]).assign(price=y)
        on_table = mlflow.models.evaluate(
            info.model_uri, table, targets="price", model_type="regressor",
            evaluators=["default"], model_config={"output": "values"},
        )
    with mlflow.start_run():
        # Plain arrays: features (400, 4) and targets (400,).
        on_arrays = mlflow.models.evaluate(
            info.model_uri, x, targets=y, model_type="regressor",
            evaluators=["default"], model_config={"output": "values"},
        )

    for form, result in (("DataFrame", on_table), ("arrays", on_arrays)):
        mae = result.metrics["mean_absolute_error"]
        print(f"{form}: mean_absolute_error {mae:.6f} (from the Keras model: {expected:.6f})")
        if abs(mae - expected) > 1e-5 * max(1.0, expected):
            sys.exit(f"evaluate's mean_absolute_error on {form} differs from the Keras model's")
    # Without the option, predict returns the model's own (batch, 1) output.
    pyfunc_model = mlflow.pyfunc.load_model(info.model_uri)
    print(f"predict shapes: {pyfunc_model.predict(x[:5]).shape} by default, "
          f"{pyfunc_model.predict(x[:5], params={'output': 'values'}).shape} with output='values'")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
