"""check_runtime: artifacts run in the official TensorFlow wheels behind EAS's processors.

TF 1.15 and 2.3 by default; ``MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1`` runs all six. The
environments are built once and cached (see ``runtimes/environments.py``).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import integrity, metadata
from mlflow_eas_savedmodel.cli import cli
from mlflow_eas_savedmodel.eas.runtime_check import compare
from mlflow_eas_savedmodel.runtimes.environments import get_runtime_spec

ALL = os.environ.get("MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES") == "1"
VERSIONS = ["1.12", "1.14", "1.15", "2.3", "2.4", "2.7"] if ALL else ["1.15", "2.3"]
X = np.random.default_rng(4).random((3, 4), dtype=np.float32)


@pytest.fixture(scope="module")
def keras_model_path(tmp_path_factory, mlp):
    path = str(tmp_path_factory.mktemp("check_runtime") / "model")
    mes.save_model(mlp, path, input_example=X)
    return path


@pytest.mark.runtime
@pytest.mark.parametrize("version", VERSIONS)
def test_keras_artifact_runs_in_the_real_runtime(keras_model_path, version):
    processor = f"tensorflow_cpu_{version}"
    report = mes.check_runtime(keras_model_path, processor=processor)
    assert report.ok, report.format()
    (runtime,) = report.runtimes
    spec = get_runtime_spec(version)
    assert runtime.tf_version == version and runtime.claimed
    assert runtime.wheel == spec.wheel and runtime.tensorflow.startswith(spec.wheel.split("==")[1][:3])
    assert runtime.python_version.startswith(spec.python_minor + ".")
    assert os.path.exists(runtime.python)
    assert runtime.c_api_load_ok and runtime.python_load_ok
    (sig,) = runtime.signatures
    assert sig.name == "serving_default" and sig.inputs_from == "input example"
    assert sig.max_abs_diff is not None and sig.max_abs_diff <= 1e-5
    assert sig.c_api_max_abs_diff is not None and sig.c_api_max_abs_diff <= 1e-5
    text = report.format()
    assert f"wheel: {spec.wheel}" in text and "C++ loader (C API TF_LoadSessionFromSavedModel): ok" in text
    assert text.endswith("PASS")


@pytest.fixture(scope="module")
def session_table_path(tmp_path_factory, tf):
    """A TF1 session with a hash table: ``serving_default`` (float) and ``lookup`` (strings)."""
    path = str(tmp_path_factory.mktemp("check_runtime_session") / "model")
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2))
        y = tf.identity(tf.nn.softmax(tf.matmul(x, w)), name="y")
        s = tf.compat.v1.placeholder(tf.string, [None], name="s")
        keys = ["a", "bb", "a key that is longer than twenty-two bytes"]
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant([1, 2, 3], tf.int64)), -1
        )
        ids = tf.identity(table.lookup(s), name="ids")
        echo = tf.identity(s, name="echo")
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            mes.save_model(
                sess, path,
                signatures={
                    "serving_default": {"inputs": {"x": x}, "outputs": {"y": y}},
                    "lookup": {"inputs": {"s": s}, "outputs": {"ids": ids, "echo": echo}},
                },
                input_example={"x": X, "s": np.array(keys + ["zz", ""])},
            )
    return path


@pytest.mark.runtime
@pytest.mark.parametrize("version", VERSIONS)
def test_session_with_table_artifact_runs_in_the_real_runtime(session_table_path, version):
    report = mes.check_runtime(session_table_path, processor=f"tensorflow_cpu_{version}")
    assert report.ok, report.format()
    signatures = {s.name: s for s in report.runtimes[0].signatures}
    assert sorted(signatures) == ["lookup", "serving_default"]
    assert {s.inputs_from for s in signatures.values()} == {"input example"}
    assert signatures["lookup"].max_abs_diff == 0.0 and signatures["lookup"].c_api_max_abs_diff == 0.0


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory, tf):
    """A ``tf.train.Saver`` checkpoint with its ``.meta`` graph (the guide's restore-then-export)."""
    folder = tmp_path_factory.mktemp("check_runtime_checkpoint")
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3))
        b = tf.compat.v1.get_variable("b", initializer=np.array([0.5, -0.5, 0.0], np.float32))
        tf.nn.relu(tf.matmul(x, w) + b, name="y")
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = tf.compat.v1.train.Saver().save(sess, str(folder / "ckpt" / "model.ckpt"))
    path = str(folder / "model")
    # No input_example: the checkpoint source refuses it today (reported); check_runtime then
    # synthesises inputs, or takes the caller's.
    mes.save_model(prefix, path, inputs={"x": "x:0"}, outputs={"y": "y:0"})
    return path


@pytest.mark.runtime
@pytest.mark.parametrize("version", VERSIONS)
def test_checkpoint_artifact_runs_in_the_real_runtime(checkpoint_path, version):
    synthesised = mes.check_runtime(checkpoint_path, processor=f"tensorflow_cpu_{version}")
    assert synthesised.ok, synthesised.format()
    assert synthesised.runtimes[0].signatures[0].inputs_from == "synthesised"
    given = mes.check_runtime(checkpoint_path, processor=f"tensorflow_cpu_{version}", inputs={"x": X})
    assert given.ok, given.format()
    (sig,) = given.runtimes[0].signatures
    assert sig.inputs_from == "given inputs" and sig.c_api_max_abs_diff <= 1e-5


@pytest.mark.runtime
def test_cli_check_runtime_json(keras_model_path):
    result = CliRunner().invoke(cli, ["check-runtime", keras_model_path, "--processor", "tensorflow_cpu_2.3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True and data["runtimes"][0]["ok"] is True
    assert data["runtimes"][0]["processors"] == ["tensorflow_cpu_2.3"]
    assert data["runtimes"][0]["signatures"][0]["problems"] == []
    result = CliRunner().invoke(cli, ["check-runtime", keras_model_path, "--processor", "tensorflow_cpu_2.3", "--all"])
    assert result.exit_code == 2 and "Pass one of --processor, --claimed and --all." in result.output


@pytest.fixture(scope="module")
def tf2_style_copy(tmp_path_factory, keras_model_path, tf):
    """The Keras artifact with its SavedModel replaced by a TF2-style save, metadata updated so
    that it still claims every processor: the kind of bug the runtime check exists to catch."""
    path = tmp_path_factory.mktemp("tf2_style") / "model"
    shutil.copytree(keras_model_path, path)
    saved_model = path / "savedmodel"
    shutil.rmtree(saved_model)

    class Dense(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.full((4, 3), 0.25, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="image")])
        def serve(self, image):
            return {"scores": tf.matmul(image, self.w)}

    module = Dense()
    tf.saved_model.save(module, str(saved_model), signatures={"serving_default": module.serve})
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(saved_model))
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    conf = mlmodel["flavors"][mes.FLAVOR_NAME]
    del meta_graph.signature_def["__saved_model_init_op"]  # TF2's init hook, not a serving signature
    conf["signature_defs"] = metadata.describe_signature_defs(meta_graph)
    conf[integrity.FLAVOR_KEY] = integrity.hash_tree(str(saved_model))
    assert "tensorflow_cpu_1.15" in conf["eas_processors"]
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return str(path)


@pytest.mark.runtime
def test_a_claim_the_runtime_refuses_is_caught(tf2_style_copy):
    report = mes.check_runtime(tf2_style_copy, processor="tensorflow_cpu_1.15")
    assert report.reference_error is None  # TF 2.21 itself runs it...
    (runtime,) = report.runtimes
    assert runtime.claimed and not runtime.ok and not report.ok  # ...but TF 1.15 refuses it
    assert not runtime.c_api_load_ok
    # The measured first blocker of TF2-style saves (reference/eas-runtimes/README.md).
    assert "NodeDef mentions attr 'debug_name' not in Op<name=VarHandleOp" in runtime.c_api_error
    assert "NodeDef mentions attr 'debug_name'" in runtime.python_error
    assert runtime.signatures[0].problems == [
        "Python loader: the model did not load", "C API: the model did not load"
    ]
    text = report.format()
    assert "C++ loader (C API TF_LoadSessionFromSavedModel): FAILED: " in text
    assert "The metadata claims this processor but the runtime refuses the model" in text
    assert text.endswith("FAIL")

    result = CliRunner().invoke(cli, ["check-runtime", tf2_style_copy, "--processor", "tensorflow_cpu_1.15"])
    assert result.exit_code == 1 and "FAIL" in result.output


def test_missing_interpreter_is_an_error_with_the_install_command(keras_model_path, tmp_path):
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PYENV_ROOT": str(tmp_path / "no-pyenv"),
        "MLFLOW_EAS_SAVEDMODEL_CACHE": str(tmp_path / "cache"),
        "PATH": "/usr/bin:/bin",
    }
    script = os.path.join(os.path.dirname(sys.executable), "mlflow-eas-savedmodel")
    proc = subprocess.run(
        [script, "check-runtime", keras_model_path, "--processor", "tensorflow_cpu_1.15"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 1
    assert "No CPython 3.7 interpreter found" in proc.stderr
    assert "`pyenv install 3.7` or `uv python install 3.7`" in proc.stderr


def test_processor_and_input_errors(keras_model_path):
    with pytest.raises(MlflowException, match="Unknown EAS processor 'tensorflow_cpu_3.0'. Use one of"):
        mes.check_runtime(keras_model_path, processor="tensorflow_cpu_3.0")
    with pytest.raises(MlflowException, match=r"The given inputs \(keys \['nope'\]\) match no SignatureDef; they take: serving_default: \['image'\]"):
        mes.check_runtime(keras_model_path, inputs={"nope": X})


def test_runtimes_to_check():
    from mlflow_eas_savedmodel.eas.runtime_check import _runtimes_to_check

    claimed = ["tensorflow_cpu_2.3", "tensorflow_gpu_1.15", "tensorflow_cpu_1.15"]
    assert _runtimes_to_check(None, False, claimed) == ["1.15", "2.3"]
    assert _runtimes_to_check("tensorflow_gpu_2.7", False, claimed) == ["2.7"]
    assert _runtimes_to_check(None, True, []) == ["1.12", "1.14", "1.15", "2.3", "2.4", "2.7"]
    with pytest.raises(MlflowException, match="The model's metadata claims no EAS processor; pass processor="):
        _runtimes_to_check(None, False, [])


def test_compare_rules():
    a = np.array([1.0, 2.0], np.float32)
    assert compare(a, a + 1e-7, "o") == (pytest.approx(1e-7, rel=0.5), [])
    diff, problems = compare(a, a + 1e-3, "o")
    assert diff == pytest.approx(1e-3, rel=1e-3)
    assert problems == ["o: max abs diff 0.001 exceeds rtol=1e-05, atol=1e-06"]
    assert compare(np.array([1, 2]), np.array([1, 3]), "i")[1] == ["i: values differ (exact match needed)"]
    assert compare(np.array([b"a"], object), np.array([b"a"]), "s") == (0.0, [])
    assert compare(np.array([b"a"], object), np.array([b"b"]), "s")[1] == ["s: strings differ from TF 2.21's"]
    assert compare(a, a[:1], "o")[1] == ["o: shape (1,), TF 2.21 gives (2,)"]
    assert compare(a, None, "o")[1] == ["o: missing from the runtime's outputs"]
