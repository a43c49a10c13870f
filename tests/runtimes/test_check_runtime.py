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
from click.testing import CliRunner
from conftest import runtime_versions
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import integrity, metadata
from mlflow_eas_savedmodel.cli import cli
from mlflow_eas_savedmodel.eas.runtime_check import compare
from mlflow_eas_savedmodel.runtimes.environments import get_runtime_spec
from support.mlmodel import read_mlmodel, write_mlmodel

VERSIONS = runtime_versions()
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
    mlmodel = read_mlmodel(path)
    conf = mlmodel["flavors"][mes.FLAVOR_NAME]
    del meta_graph.signature_def["__saved_model_init_op"]  # TF2's init hook, not a serving signature
    conf["signature_defs"] = metadata.describe_signature_defs(meta_graph)
    conf["file_sha256"] = integrity.hash_tree(str(saved_model))
    # A TF2 save's Saver lives in functions, off the artifact rules of the ops policy: opted in,
    # so that the check reaches the runtime (without it check-runtime refuses before running).
    conf["allow_ops"] = ["MergeV2Checkpoints", "RestoreV2", "SaveV2", "ShardedFilename"]
    assert "tensorflow_cpu_1.15" in conf["eas_processors"]
    write_mlmodel(path, mlmodel)
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
    assert problems == ["o: max abs diff 0.001 exceeds 2.1e-05 (atol=1e-06 + rtol=1e-05 x max|output| 2)"]
    assert compare(a, a + 1e-3, "o", rtol=1e-3)[1] == []
    assert compare(a, a + 1e-3, "o", atol=2e-3)[1] == []
    assert compare(np.array([1, 2]), np.array([1, 3]), "i")[1] == ["i: values differ by up to 1 (exact match needed)"]
    assert compare(np.array([b"a"], object), np.array([b"a"]), "s") == (0.0, [])
    assert compare(np.array([b"a"], object), np.array([b"b"]), "s")[1] == ["s: strings differ from TF 2.21's"]
    assert compare(a, a[:1], "o")[1] == ["o: shape (1,), TF 2.21 gives (2,)"]
    assert compare(a, None, "o")[1] == ["o: missing from the outputs"]
    nan = np.array([np.nan, 1.0], np.float32)
    assert compare(nan, nan.copy(), "n") == (0.0, [])
    assert compare(nan, np.array([0.0, 1.0], np.float32), "n")[1] == ["n: NaN where TF 2.21 has a number (or the reverse)"]


def test_tolerance_is_relative_to_the_output_magnitude():
    """Float32 logits: an element near zero beside large ones carries the rounding of the large
    ones (measured on ConvNeXt and a 200 MB MLP); per-element allclose called that a bug."""
    expected = np.array([120.0, -80.0, 3e-6], np.float32)
    actual = expected + np.array([4e-4, -3e-4, 4e-6], np.float32)
    assert not np.allclose(actual, expected, rtol=1e-5, atol=1e-6)
    diff, problems = compare(expected, actual, "logits")
    assert problems == [] and diff == pytest.approx(4e-4, rel=0.05)
    diff, problems = compare(expected, expected + 0.01, "logits")
    assert problems and "exceeds 0.0012 (atol=1e-06 + rtol=1e-05 x max|output| 120)" in problems[0]


# --------------------------------------------------------------------------- Estimator era


@pytest.fixture(scope="module")
def estimator_path(tmp_path_factory, tf):
    """An Estimator-style export (classify/regress/predict on tf.Examples), converted."""
    from support.estimator_models import build_estimator_saved_model

    folder = tmp_path_factory.mktemp("check_runtime_estimator")
    export = build_estimator_saved_model(tf, str(folder / "export"), parse_v2=True)
    path = str(folder / "model")
    mes.save_model(export, path)
    return path


@pytest.mark.runtime
@pytest.mark.parametrize("version", VERSIONS)
def test_estimator_signatures_run_on_synthesised_examples(estimator_path, version):
    """Valid serialized tf.Examples from the parse op's spec; '/' in a SignatureDef name."""
    report = mes.check_runtime(estimator_path, processor=f"tensorflow_cpu_{version}")
    assert report.ok, report.format()
    signatures = {s.name: s for s in report.runtimes[0].signatures}
    assert sorted(signatures) == ["classification", "predict", "serving_default", "tensorflow/serving/regress"]
    assert {s.inputs_from for s in signatures.values()} == {"synthesised"}
    assert all(s.verdict == "passed" and s.c_api_max_abs_diff <= 1e-5 for s in signatures.values())
    assert report.runtimes[0].verdict == "passed"


@pytest.mark.runtime
def test_inputs_per_signature_and_from_a_file(tmp_path, estimator_path, tf):
    from support.estimator_models import serialized_examples

    regress = serialized_examples(tf, np.ones((2, 3)), ["red", "blue"])
    predict = serialized_examples(tf, np.zeros((3, 3)), ["green", "pink", "red"])
    per_signature = {"tensorflow/serving/regress": {"inputs": regress}, "predict": {"examples": predict}}
    report = mes.check_runtime(estimator_path, processor="tensorflow_cpu_2.3", inputs=per_signature)
    assert report.ok, report.format()
    origins = {s.name: s.inputs_from for s in report.runtimes[0].signatures}
    assert origins == {
        "classification": "synthesised", "predict": "given inputs",
        "serving_default": "synthesised", "tensorflow/serving/regress": "given inputs",
    }
    npz = tmp_path / "inputs.npz"
    np.savez(npz, **{"tensorflow/serving/regress/inputs": regress.astype(bytes)})
    result = CliRunner().invoke(
        cli, ["check-runtime", estimator_path, "--processor", "tensorflow_cpu_2.3", "--input", str(npz),
              "--rtol", "1e-4", "--atol", "1e-5", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["rtol"] == 1e-4 and data["atol"] == 1e-5
    origins = {s["name"]: s["inputs_from"] for s in data["runtimes"][0]["signatures"]}
    assert origins["tensorflow/serving/regress"] == "given inputs" and origins["predict"] == "synthesised"


def test_input_files_are_read_and_bad_ones_named(tmp_path):
    from mlflow_eas_savedmodel.eas.inputs import load_inputs_file

    (tmp_path / "flat.json").write_text(json.dumps({"x": [[1.0, 2.0]]}))
    assert load_inputs_file(str(tmp_path / "flat.json"))["x"].tolist() == [[1.0, 2.0]]
    (tmp_path / "nested.json").write_text(json.dumps({"predict": {"x": [1, 2]}}))
    assert load_inputs_file(str(tmp_path / "nested.json"))["predict"]["x"].tolist() == [1, 2]
    np.savez(tmp_path / "flat.npz", x=np.ones(2))
    assert list(load_inputs_file(str(tmp_path / "flat.npz"))) == ["x"]
    with pytest.raises(MlflowException, match=r"Input file '.*nope.npz' does not exist"):
        load_inputs_file(str(tmp_path / "nope.npz"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MlflowException, match=r"Cannot read '.*bad.json' as JSON"):
        load_inputs_file(str(tmp_path / "bad.json"))
    (tmp_path / "x.csv").write_text("1")
    with pytest.raises(MlflowException, match=r"must end in .npz or .json"):
        load_inputs_file(str(tmp_path / "x.csv"))


def test_per_signature_inputs_must_cover_the_signature():
    from mlflow_eas_savedmodel.eas.inputs import resolve_inputs

    sigs = {"a": {"inputs": {"x": {"dtype": "float32", "shape": [-1]}, "y": {"dtype": "float32", "shape": [-1]}}}}
    with pytest.raises(MlflowException, match=r"The inputs given for SignatureDef 'a' \(keys \['x'\]\) do not cover its inputs \['x', 'y'\]"):
        resolve_inputs(sigs, None, None, inputs={"a": {"x": np.ones(2)}})


def _run(outputs, c_outputs=None, loaded=True, run_errors=None):
    from mlflow_eas_savedmodel.runtimes.runtime_process import RuntimeRun

    return RuntimeRun(
        "1.15", "python", "3.7", "tensorflow-cpu==1.15.0", loaded, None if loaded else "refused", loaded,
        None if loaded else "refused", outputs=outputs, c_api_outputs=c_outputs or outputs,
        c_api_run_errors=dict(run_errors or {}), python_run_errors=dict(run_errors or {}),
    )


def test_verdicts_tell_refused_failed_and_differing_apart():
    from mlflow_eas_savedmodel.eas.runtime_check import RuntimeResult, _fill

    sigs = {"a": {}, "b": {}}
    reference = {"a": {"y": np.array([1.0, 2.0])}, "b": {"y": np.array([3.0])}}
    origins = {"a": "synthesised", "b": "synthesised"}

    def verdict(run, reference_errors=None):
        result = RuntimeResult(**vars(run), processors=["tensorflow_cpu_1.15"], claimed=True)
        _fill(result, sigs, reference, origins, None, reference_errors or {}, 1e-5, 1e-6)
        return result

    ok = verdict(_run({"a": {"y": np.array([1.0, 2.0])}, "b": {"y": np.array([3.0])}}))
    assert ok.verdict == "passed" and ok.ok
    differs = verdict(_run({"a": {"y": np.array([1.0, 2.1])}, "b": {"y": np.array([3.0])}}))
    assert differs.verdict == "ran, outputs differ" and not differs.ok
    assert [s.verdict for s in differs.signatures] == ["ran, outputs differ", "passed"]
    failed = verdict(_run({"b": {"y": np.array([3.0])}}, run_errors={"a": "boom"}))
    assert failed.verdict == "failed to run"
    refused = verdict(_run({}, loaded=False))
    assert refused.verdict == "refused to load"
    # One SignatureDef TF 2.21 cannot run keeps the other's comparison.
    partial = verdict(_run({"a": {"y": np.array([1.0, 2.0])}, "b": {"y": np.array([3.0])}}), {"b": "ValueError: x"})
    assert [s.verdict for s in partial.signatures] == ["passed", "ran, no reference"]


@pytest.mark.runtime
def test_zero_input_signature_runs_in_the_real_runtime(tmp_path, tf):
    g = tf.Graph()
    with g.as_default():
        c = tf.compat.v1.get_variable("c", initializer=np.array([1.0, 2.0], np.float32), use_resource=False)
        version = tf.identity(c * 2, name="version")
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            mes.save_model(sess, str(tmp_path / "m"), signatures={
                "serving_default": {"inputs": {"x": x}, "outputs": {"y": tf.identity(x + c, name="y")}},
            })
            builder = tf.compat.v1.saved_model.Builder(str(tmp_path / "sm"))
            info = tf.compat.v1.saved_model.build_tensor_info
            builder.add_meta_graph_and_variables(sess, ["serve"], {
                "model_version": tf.compat.v1.saved_model.build_signature_def(
                    {}, {"version": info(version)}, "tensorflow/serving/predict"),
            })
            builder.save()
    mes.save_model(str(tmp_path / "sm"), str(tmp_path / "zero"))
    report = mes.check_runtime(str(tmp_path / "zero"), processor="tensorflow_cpu_1.15")
    assert report.ok, report.format()
    (sig,) = report.runtimes[0].signatures
    assert sig.name == "model_version" and sig.c_api_max_abs_diff == 0.0 and sig.max_abs_diff == 0.0


def test_string_arrays_cross_to_the_runner_with_their_trailing_nul_bytes(tmp_path):
    """numpy's S dtype strips trailing NULs: a serialized tf.Example ending in 0.0 floats broke."""
    from mlflow_eas_savedmodel.runtimes._npz_format import pack_arrays, unpack_arrays

    values = np.array([[b"ab\x00\x00", b""], ["\u00e9", b"\x00"]], dtype=object)
    path = tmp_path / "a.npz"
    np.savez(path, **pack_arrays({"s": values, "f": np.arange(3.0), "empty": np.zeros((2, 0), object)}))
    with np.load(path, allow_pickle=False) as data:
        back = unpack_arrays(data)
    assert back["s"].tolist() == [[b"ab\x00\x00", b""], ["\u00e9".encode(), b"\x00"]]
    np.testing.assert_array_equal(back["f"], np.arange(3.0))
    assert back["empty"].shape == (2, 0)


@pytest.mark.runtime
def test_strings_ending_in_nul_reach_the_runtime_intact(tmp_path, tf):
    graph = tf.Graph()
    with graph.as_default():
        s = tf.compat.v1.placeholder(tf.string, [None], name="s")
        length = tf.strings.length(s, name="length")
        with tf.compat.v1.Session(graph=graph) as sess:
            mes.save_model(sess, str(tmp_path / "m"), inputs={"s": s}, outputs={"length": length})
    report = mes.check_runtime(
        str(tmp_path / "m"), processor="tensorflow_cpu_1.15",
        inputs={"s": np.array([b"a\x00\x00", b"\x00"], dtype=object)},
    )
    assert report.ok, report.format()
    (result,) = report.runtimes[0].signatures
    assert result.max_abs_diff == 0 and result.c_api_max_abs_diff == 0
