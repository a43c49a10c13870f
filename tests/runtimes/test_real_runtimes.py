"""SavedModels run in the real old TensorFlow runtimes of EAS's processors (no mocks).

By default the ``runtime`` tests use TF 1.15 and 2.3; set ``MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1``
for every runtime of ``runtimes/table.py`` (``conftest.runtime_versions``).  Environments are built once and cached under
``~/.cache/mlflow-eas-savedmodel/runtimes`` (see ``environments.py``).
"""

import os
import time

import numpy as np
import pytest
from conftest import runtime_versions
from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.runtimes import environments, venvs
from mlflow_eas_savedmodel.runtimes.environments import RuntimeSpec, ensure_runtime
from mlflow_eas_savedmodel.runtimes.runtime_process import run_in_runtime
from mlflow_eas_savedmodel.runtimes.venvs import cache_root, find_interpreter

VERSIONS = runtime_versions()

W = (np.arange(6, dtype=np.float32).reshape(3, 2) / 7.0).astype(np.float32)
B = np.array([0.5, -1.0], np.float32)
KEYS = ["a", "bb", "a key that is longer than twenty-two bytes"]
FEEDS = {
    "serving_default": {"x": np.array([[1, 2, 3], [0, -1, 0.5], [4, 4, 4]], np.float32)},
    "lookup": {"s": np.array(["a", "zz", KEYS[2], "bb", ""])},
}


def _build_tf1_model(export_dir):
    """TF1 graph, reference variables, a hash table; Builder(strip_default_attrs=True)."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        w = tf.compat.v1.get_variable("w", initializer=W, use_resource=False)
        b = tf.compat.v1.get_variable("b", initializer=B, use_resource=False)
        y = tf.identity(tf.matmul(x, w) + b, name="y")
        s = tf.compat.v1.placeholder(tf.string, [None], name="s")
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(KEYS), tf.constant([1, 2, 3], tf.int64)
            ),
            default_value=-1,
        )
        ids = tf.identity(table.lookup(s), name="ids")
        echo = tf.identity(s, name="echo")
        info = tf.compat.v1.saved_model.utils.build_tensor_info
        build = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
        sigs = {
            "serving_default": build({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict"),
            "lookup": build({"s": info(s)}, {"ids": info(ids), "echo": info(echo)},
                            "tensorflow/serving/predict"),
        }
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(tf.compat.v1.tables_initializer())
            builder = tf.compat.v1.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                sess,
                ["serve"],
                signature_def_map=sigs,
                main_op=tf.compat.v1.tables_initializer(),
                strip_default_attrs=True,
                clear_devices=True,
            )
            builder.save()
            expected = {
                "serving_default": sess.run({"y": y}, {x: FEEDS["serving_default"]["x"]}),
                "lookup": sess.run(
                    {"ids": ids, "echo": echo},
                    {s: [v.encode() for v in FEEDS["lookup"]["s"].tolist()]},
                ),
            }
    return expected


def _build_tf2_model(export_dir):
    """The same dense layer, written TF2-style: Keras 3 layer + tf.saved_model.save."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.layers[0].set_weights([W, B])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(x):
        return {"y": model(x)}

    module = tf.Module()
    module.model = model
    module.serve = serve
    tf.saved_model.save(module, export_dir, signatures={"serving_default": serve})


@pytest.fixture(scope="module")
def tf1_model(tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("tf1") / "model")
    return export_dir, _build_tf1_model(export_dir)


def _assert_same(actual, expected, where):
    assert set(actual) == set(expected), where
    for sig, outs in expected.items():
        assert set(actual[sig]) == set(outs), (where, sig)
        for key, want in outs.items():
            got = actual[sig][key]
            want = np.asarray(want)
            if want.dtype == object or want.dtype.kind in "SU":
                assert [bytes(v) for v in got.tolist()] == [bytes(v) for v in want.tolist()], (
                    where, sig, key)
            else:
                assert got.shape == want.shape, (where, sig, key)
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str((where, sig, key)))


@pytest.mark.runtime
@pytest.mark.parametrize("tf_version", VERSIONS)
def test_tf1_savedmodel_runs_in_real_runtime(tf1_model, tf_version):
    export_dir, expected = tf1_model
    ensure_runtime(tf_version)  # build outside the timing
    t0 = time.monotonic()
    run = run_in_runtime(export_dir, tf_version, FEEDS, timeout=300)
    elapsed = time.monotonic() - t0
    print("run_in_runtime(%s): %.2f s (runner %.2f s)" % (tf_version, elapsed, run.seconds))
    assert run.tensorflow.startswith(tf_version + "."), run.report
    assert run.c_api_load_ok, run.c_api_error
    assert run.python_load_ok, run.python_error
    assert not run.c_api_run_errors and not run.python_run_errors, run.report
    assert run.ok
    _assert_same(run.outputs, expected, "python loader %s" % tf_version)
    _assert_same(run.c_api_outputs, expected, "C API %s" % tf_version)
    assert run.python_version.startswith(environments.RUNTIMES[tf_version].python_minor + ".")
    assert run.wheel == environments.RUNTIMES[tf_version].wheel


@pytest.mark.runtime
def test_tf2_style_savedmodel_fails_in_1_15(tmp_path):
    """The check can fail: a TF2-style save does not load with 1.15's C++ loader."""
    export_dir = str(tmp_path / "tf2")
    _build_tf2_model(export_dir)
    run = run_in_runtime(export_dir, "1.15", {"serving_default": FEEDS["serving_default"]})
    assert not run.c_api_load_ok
    assert "debug_name" in run.c_api_error or "DisableCopyOnRead" in run.c_api_error, run.c_api_error
    assert not run.ok
    assert not run.c_api_outputs


@pytest.mark.runtime
def test_cached_runtime_is_reused():
    env = ensure_runtime("1.15")
    t0 = time.monotonic()
    again = ensure_runtime("tensorflow_cpu_1.15")
    assert time.monotonic() - t0 < 5
    assert again == env
    assert os.path.exists(os.path.join(env.path, ".mlflow-eas-runtime.json"))
    assert env.interpreter_version.startswith("3.7.")
    assert env.wheel == "tensorflow-cpu==1.15.0"


@pytest.mark.runtime
def test_find_interpreter_finds_old_python():
    path = find_interpreter("3.7")
    assert venvs._interpreter_version(path).startswith("3.7.")


def test_missing_interpreter_error(monkeypatch, tmp_path):
    monkeypatch.setenv(venvs.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setitem(
        environments.RUNTIMES, "1.15", RuntimeSpec("1.15", "3.1", "tensorflow-cpu==1.15.0")
    )
    # An unfinished build (no marker) is not taken for a built environment.
    os.makedirs(os.path.join(environments.runtime_dir("1.15"), "bin"))
    with pytest.raises(MlflowException) as info:
        ensure_runtime("1.15")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    msg = info.value.message
    assert "3.1" in msg
    assert "pyenv install 3.1" in msg and "uv python install 3.1" in msg
    with pytest.raises(MlflowException, match="pyenv install 3.1"):
        find_interpreter("3.1")


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv(venvs.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == str(tmp_path / "xdg" / "mlflow-eas-savedmodel")
    assert environments.runtime_dir("2.3") == str(
        tmp_path / "xdg" / "mlflow-eas-savedmodel" / "runtimes" / "tf-2.3"
    )
    monkeypatch.setenv(venvs.CACHE_ENV_VAR, str(tmp_path / "override"))
    assert cache_root() == str(tmp_path / "override")
    with pytest.raises(MlflowException, match="Unknown EAS TensorFlow runtime"):
        environments.get_runtime_spec("1.13")
