"""From training to a served model in about a minute: the whole path of an EAS model, locally.

Run it from the repository root (no venv activation needed):

    .venv/bin/python examples/demo.py

It does, printing each step:

1. trains a small Keras classifier on synthetic 8x8 "digit" images (a few seconds);
2. logs it with the ``eas_savedmodel`` flavor into a local MLflow store, ``./demo-work/mlflow.db``
   with artifacts in ``./demo-work/artifacts``, and registers it as ``demo-mnist``;
3. promotes the new version to the ``champion`` alias with
   :func:`mlflow_eas_savedmodel.registry.promote` (which checks flavor, EAS layout, file hashes
   and that the SignatureDefs match the previous champion's);
4. serves ``models:/demo-mnist@champion`` with ``mlflow models serve --env-manager local`` on a
   free loopback port, sends one request naming the SignatureDef (``params.signature_name``),
   and prints the answer and the EAS processors the model is compatible with;
5. stops the server, whatever happened.

Running it again adds a version and moves ``champion`` to it. Delete ``./demo-work`` to start
over. The request and the answer are kept in ``./demo-work/request.json`` and ``response.json``.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np


MODEL_NAME = "demo-mnist"
SIGNATURE_NAME = "predict_images"
WORK_DIR = os.path.abspath("demo-work")
SERVER_START_TIMEOUT_S = 180  # MLflow + TensorFlow imports take ~20 s on a busy 2-core machine
IMAGE_SIDE = 8
CLASSES = 10


def step(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def synthetic_digits(n, seed):
    """``n`` noisy 8x8 images around one fixed random prototype per class, and their labels."""
    prototypes = np.random.default_rng(1234).random((CLASSES, IMAGE_SIDE * IMAGE_SIDE), dtype=np.float32)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    images = prototypes[labels] + rng.normal(0, 0.5, (n, IMAGE_SIDE * IMAGE_SIDE)).astype(np.float32)
    return images.astype(np.float32), labels


def train():
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    import_tensorflow()  # TensorFlow first, without its start-up banners on stderr
    import keras

    keras.utils.set_random_seed(0)
    x, y = synthetic_digits(2000, seed=0)
    inputs = keras.Input((IMAGE_SIDE * IMAGE_SIDE,), name="image")
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(inputs, outputs, name="digits")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    x_test, y_test = synthetic_digits(500, seed=1)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return model, float(accuracy)


def log_and_register(model, accuracy):
    import mlflow

    import mlflow_eas_savedmodel

    tracking_uri = f"sqlite:///{os.path.join(WORK_DIR, 'mlflow.db')}"
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name("demo")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow.create_experiment(
            "demo", artifact_location=f"file://{os.path.join(WORK_DIR, 'artifacts')}"
        )
    )
    example, _ = synthetic_digits(2, seed=2)
    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.log_metric("accuracy", accuracy)
        info = mlflow_eas_savedmodel.log_model(
            model,
            name="model",
            signature_name=SIGNATURE_NAME,
            input_example=example,
            registered_model_name=MODEL_NAME,
        )
    return tracking_uri, str(info.registered_model_version)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tracking_uri, port):
    """``mlflow models serve`` in its own process group (so stopping it stops its workers)."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, TF_CPP_MIN_LOG_LEVEL="2")
    # `mlflow models serve` starts `uvicorn` by name: this interpreter's bin folder must be on
    # PATH even when the venv is not activated.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    log = open(os.path.join(WORK_DIR, "server.log"), "wb")
    command = [
        sys.executable, "-m", "mlflow", "models", "serve",
        "-m", f"models:/{MODEL_NAME}@champion", "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port),
    ]
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    finally:
        log.close()  # the child has its own handle


def wait_until_ready(process, port):
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The server exited ({process.returncode}); see {WORK_DIR}/server.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"The server did not answer in {SERVER_START_TIMEOUT_S} s; see {WORK_DIR}/server.log")


def stop_server(process):
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def invoke(port, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def quiet_libraries():
    """Deprecation notices of TensorFlow's TF1 loader would drown the demo's steps."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def main():
    quiet_libraries()
    started = time.monotonic()
    os.makedirs(WORK_DIR, exist_ok=True)
    step("1/5 Training a small Keras classifier on synthetic 8x8 digit images...")
    model, accuracy = train()
    step(f"    test accuracy: {accuracy:.3f}")

    step(f"2/5 Logging it with the eas_savedmodel flavor into {WORK_DIR}/mlflow.db "
         f"and registering it as {MODEL_NAME!r}...")
    tracking_uri, version = log_and_register(model, accuracy)
    step(f"    registered {MODEL_NAME!r} version {version}")

    step(f"3/5 Promoting version {version} to @champion (flavor, layout, hashes, SignatureDefs)...")
    from mlflow_eas_savedmodel.registry import promote

    result = promote(MODEL_NAME, version, alias="champion")
    before = f" (was version {result.previous_version})" if result.previous_version else ""
    step(f"    @champion -> version {result.version}{before}")

    port = free_port()
    step(f"4/5 Serving models:/{MODEL_NAME}@champion with `mlflow models serve` on 127.0.0.1:{port}...")
    process = start_server(tracking_uri, port)
    try:
        wait_until_ready(process, port)
        step("    server ready; sending 3 images with params.signature_name=" + repr(SIGNATURE_NAME))
        images, labels = synthetic_digits(3, seed=3)
        body = {"inputs": {"image": images.tolist()}, "params": {"signature_name": SIGNATURE_NAME}}
        answer = invoke(port, body)
        for name, content in (("request.json", body), ("response.json", answer)):
            with open(os.path.join(WORK_DIR, name), "w") as f:
                json.dump(content, f)
        probabilities = np.asarray(answer["predictions"])
        for i, row in enumerate(probabilities):
            step(f"    image {i}: predicted class {int(row.argmax())} "
                 f"(p={row.max():.2f}), true class {int(labels[i])}")
    finally:
        stop_server(process)
        step("5/5 Server stopped.")

    import mlflow

    flavor = mlflow.models.get_model_info(f"models:/{MODEL_NAME}@champion").flavors["eas_savedmodel"]
    step(f"Compatible EAS processors: {', '.join(flavor['eas_processors'])}")
    step(f"SignatureDefs: {', '.join(flavor['signature_defs'])}; "
         f"done in {time.monotonic() - started:.0f} s.")


if __name__ == "__main__":
    main()
