"""TensorFlow's log noise stays out of the terminal during save_model/log_model.

A subprocess with ``TF_CPP_MIN_LOG_LEVEL`` unset (TensorFlow's default: every C++ INFO line)
imports TensorFlow itself first, as a user's script does, then saves a Keras model, a TF1
session and a SavedModel folder and logs the Keras model to a sqlite store. Between the markers
it prints around each call, only this package's INFO line and MLflow's own INFO lines may
appear; ``logging`` at INFO on ``mlflow_eas_savedmodel`` says what the export did.
"""

import os
import re
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    import numpy as np
    import tensorflow as tf  # the user's own import: ours never ran
    import keras
    import mlflow
    import mlflow_eas_savedmodel as mes

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("LOG %(name)s %(levelname)s %(message)s"))
    logging.getLogger("mlflow_eas_savedmodel").addHandler(handler)
    logging.getLogger("mlflow_eas_savedmodel").setLevel(logging.INFO)
    logging.getLogger("mlflow_eas_savedmodel").propagate = False  # someone set up the root logger
    work = sys.argv[1]
    mlflow.set_tracking_uri("sqlite:///" + os.path.join(work, "mlflow.db"))
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("noise", artifact_location="file://" + os.path.join(work, "artifacts")))

    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, keras.layers.Dense(3, name="y")(inp))
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.ones((4, 3), np.float32))
        y = tf.identity(tf.matmul(x, w), name="y")
        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())

    class Module(tf.Module):
        def __init__(self):
            self.v = tf.Variable(np.ones((4, 3), np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            return {"y": tf.matmul(x, self.v)}

    module = Module()
    tf.saved_model.save(module, os.path.join(work, "tf2"), signatures={"serving_default": module.serve})

    def marked(name, call):
        sys.stdout.flush(); sys.stderr.flush()
        print("<<<", name, flush=True)
        call()
        sys.stdout.flush(); sys.stderr.flush()
        print(">>>", name, flush=True)

    marked("keras", lambda: mes.save_model(model, os.path.join(work, "keras")))
    marked("session", lambda: mes.save_model(session, os.path.join(work, "session"), inputs={"x": x}, outputs={"y": y}))
    marked("saved_model", lambda: mes.save_model(os.path.join(work, "tf2"), os.path.join(work, "saved_model")))
    with mlflow.start_run():
        marked("log_model", lambda: mes.log_model(model, name="model"))
    """
)
ALLOWED = re.compile(r"^(LOG mlflow_eas_savedmodel\S* INFO |\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow\.)")


def _segments(output):
    segments, current = {}, None
    for line in output.splitlines():
        if line.startswith("<<< "):
            current = line[4:]
            segments[current] = []
        elif line.startswith(">>> "):
            current = None
        elif current is not None:
            segments[current].append(line)
    return segments


def test_save_and_log_print_no_tensorflow_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_EAS_SAVEDMODEL_TF_LOGS")}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout
    segments = _segments(result.stdout)
    assert sorted(segments) == ["keras", "log_model", "saved_model", "session"], result.stdout
    for name, lines in segments.items():
        noise = [line for line in lines if not ALLOWED.match(line)]
        assert noise == [], f"{name}: {noise}"
        info = [line for line in lines if line.startswith("LOG mlflow_eas_savedmodel.save INFO Saved ")]
        assert len(info) == 1, (name, lines)
    # The INFO line says what the export did.
    assert re.search(r"Saved keras model to \S+keras as a TF1 SavedModel: SignatureDefs serving_default\(x\) -> y "
                     r"\(default 'serving_default'\); \d+ bytes of weights in variables/; conversion: .+; "
                     r"EAS processors: tensorflow_cpu_1\.12, ", segments["keras"][-1]), segments["keras"]
    assert "Saved session model" in "\n".join(segments["session"])
    assert "re-exported" in "\n".join(segments["saved_model"]).lower(), segments["saved_model"]
