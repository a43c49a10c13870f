"""Scalar (0-d) variables, from every source, load and answer in TF 2.21 and the old runtimes.

They used to be written to ``variables/`` with shape ``(1,)`` (``np.ascontiguousarray`` makes
every array at least 1-d), so no loader restored them (``Assign requires shapes of both tensors
to match. lhs shape= [] rhs shape= [1]``) and two signatures sharing one scalar failed to convert.
"""

import os

import numpy as np
import pytest
from conftest import CI_RUNTIMES

import mlflow_eas_savedmodel as mes

X = np.array([[1.0, -2.0], [0.5, 4.0]], np.float32)
RUNTIME_VERSIONS = list(CI_RUNTIMES)


def _session_graph(tf, use_resource):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        scale = tf.compat.v1.get_variable("scale", initializer=np.float32(2.5), use_resource=use_resource)
        step = tf.compat.v1.get_variable("step", initializer=np.int64(7), use_resource=use_resource)
        y = tf.identity(x * scale + tf.cast(step, tf.float32), name="y")
        init = tf.compat.v1.global_variables_initializer()
    sess = tf.compat.v1.Session(graph=graph)
    sess.run(init)
    return sess, x, y


def _session(tf, path, use_resource):
    sess, x, y = _session_graph(tf, use_resource)
    with sess:
        expected = {"y": sess.run(y, {x: X})}
        mes.save_model(sess, path, inputs={"x": x}, outputs={"y": y})
    return {"x": X}, expected


def _simple_save_folder(tf, path, use_resource):
    sess, x, y = _session_graph(tf, use_resource)
    folder = path + "-source"
    with sess, sess.graph.as_default():
        expected = {"y": sess.run(y, {x: X})}
        tf.compat.v1.saved_model.simple_save(sess, folder, inputs={"x": x}, outputs={"y": y})
    mes.save_model(folder, path)
    return {"x": X}, expected


def _keras(keras, path):
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(3.0), name="scale"
            )

        def call(self, inputs):
            return inputs * self.scale

    inputs = keras.Input((2,), name="x")
    model = keras.Model(inputs, Scale(name="y")(inputs))
    expected = {"y": np.asarray(model(X))}
    mes.save_model(model, path, inputs={"x": model.input}, outputs={"y": model.output})
    return {"x": X}, expected


def _tf2_module(tf, path):
    class Module(tf.Module):
        def __init__(self):
            self.a = tf.Variable(2.0, name="a")

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def times(self, x):
            return {"y": x * self.a}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def plus(self, x):
            return {"y": x + self.a}

    module = Module()
    folder = path + "-source"
    tf.saved_model.save(module, folder, signatures={"serving_default": module.times, "plus": module.plus})
    mes.save_model(folder, path)
    return {"x": X}, {"y": X * 2.0}, {"y": X + 2.0}


CASES = ["session-ref", "session-resource", "simple_save-ref", "simple_save-resource", "keras3",
         "tf_keras", "tf2_module"]


@pytest.fixture(scope="module")
def exported(tf, tmp_path_factory):
    cache = {}

    def get(case):
        if case not in cache:
            path = str(tmp_path_factory.mktemp(case) / "model")
            if case.startswith("session"):
                feeds, expected = _session(tf, path, case.endswith("resource"))
                signatures = {"serving_default": (feeds, expected)}
            elif case.startswith("simple_save"):
                feeds, expected = _simple_save_folder(tf, path, case.endswith("resource"))
                signatures = {"serving_default": (feeds, expected)}
            elif case == "keras3":
                import keras

                signatures = {"serving_default": _keras(keras, path)}
            elif case == "tf_keras":
                signatures = {"serving_default": _keras(pytest.importorskip("tf_keras"), path)}
            else:
                feeds, times, plus = _tf2_module(tf, path)
                signatures = {"serving_default": (feeds, times), "plus": (feeds, plus)}
            cache[case] = path, signatures
        return cache[case]

    return get


@pytest.mark.parametrize("case", CASES)
def test_scalar_variable_round_trips_in_tf_2_21(tf, exported, case):
    path, signatures = exported(case)
    handle = mes.load_model(path)
    for name, (feeds, expected) in signatures.items():
        got = handle.predict(feeds, signature_name=name)
        for key, want in expected.items():
            np.testing.assert_allclose(got[key], want, rtol=1e-6, err_msg=f"{case} {name} {key}")
    reader = tf.train.load_checkpoint(os.path.join(path, "savedmodel", "variables", "variables"))
    scalars = [name for name, shape in reader.get_variable_to_shape_map().items() if shape == []]
    assert scalars, reader.get_variable_to_shape_map()  # stored 0-d, not as shape [1]


@pytest.mark.runtime
@pytest.mark.parametrize("version", RUNTIME_VERSIONS)
@pytest.mark.parametrize("case", ["session-ref", "simple_save-resource", "keras3", "tf2_module"])
def test_scalar_variable_runs_in_the_real_runtime(exported, case, version):
    from mlflow_eas_savedmodel.runtimes.runtime_process import run_in_runtime

    path, signatures = exported(case)
    run = run_in_runtime(
        os.path.join(path, "savedmodel"), version, {n: feeds for n, (feeds, _) in signatures.items()}
    )
    assert run.ok, run.report
    for outputs in (run.outputs, run.c_api_outputs):
        for name, (_, expected) in signatures.items():
            for key, want in expected.items():
                np.testing.assert_allclose(outputs[name][key], want, rtol=1e-6, err_msg=f"{case} {name}")
