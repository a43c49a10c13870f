"""The guide's scenario 1, "Convert a Keras model to the SavedModel format", on TensorFlow 2.21.

The guide loads ``mnist.h5`` with ``tf.keras.models.load_model`` and calls
``tf.saved_model.simple_save(tf.keras.backend.get_session(), ...)``: neither exists as such in
TensorFlow 2, and a SavedModel TF 2.21 writes does not load on EAS. Here the H5 file is logged
directly; the flavor traces and freezes it and writes a SavedModel EAS's processors load.

    .venv/bin/python examples/guide_keras_h5.py [WORK_DIR]

WORK_DIR (default: a temporary folder) receives ``mnist.h5`` and the sqlite MLflow store.
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

    import mlflow_eas_savedmodel as mes

    # 1. A Keras model saved as H5, standing in for the guide's trained ./mnist.h5.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,), name="image")
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="scores")(hidden))
    h5_path = os.path.join(work_dir, "mnist.h5")
    model.save(h5_path)
    print(f"saved Keras model to {h5_path}")

    # 2. The guide's simple_save(inputs={"image": model.input}, outputs={"scores": model.output}).
    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(work_dir, 'mlflow.db')}")
    mlflow.set_experiment("guide")
    with mlflow.start_run():
        info = mes.log_model(h5_path, name="h5_savedmodel", inputs=["image"], outputs=["scores"])
    print(f"logged {info.model_uri}")

    # 3. Load it back and compare with the original model.
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    scores = mlflow.pyfunc.load_model(info.model_uri).predict(x, params={"signature_name": "serving_default"})
    np.testing.assert_allclose(scores, model(x).numpy(), rtol=1e-5, atol=1e-6)
    conf = mes.load_model(info.model_uri, device="cpu")
    print(f"signature serving_default: inputs {list(conf.signatures['serving_default']['inputs'])}, "
          f"outputs {list(conf.signatures['serving_default']['outputs'])}; predictions match the H5 model")
    flavor = mlflow.models.Model.load(info.model_uri).flavors[mes.FLAVOR_NAME]
    print(f"compatible EAS processors: {', '.join(flavor['eas_processors'])}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
