"""save_model/log_model/load_model: the artifact, the MLmodel metadata, requirements, load paths."""

import json
import os

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import bundle
from mlflow_eas_savedmodel import runtimes
from support.mlmodel import read_mlmodel


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mlp):
    path = tmp_path_factory.mktemp("flavor") / "model"
    x = np.random.default_rng(1).random((2, 4), dtype=np.float32)
    mes.save_model(mlp, path, input_example=x, inputs={"image": mlp.input}, outputs={"scores": mlp.output})
    return path


def _mlmodel(path):
    return read_mlmodel(path)


def test_metadata_records_every_signature_def_field(saved, tf):
    conf = _mlmodel(saved)["flavors"][mes.FLAVOR_NAME]
    assert conf["saved_model_dir"] == "savedmodel"
    assert conf["source"] == "keras"
    assert conf["tags"] == ["serve"]
    assert conf["default_signature"] == "serving_default"
    assert conf["tensorflow_version"] == tf.__version__
    assert conf["signature_defs"] == {
        "serving_default": {
            "method_name": "tensorflow/serving/predict",
            "inputs": {"image": {"name": "image:0", "dtype": "float32", "shape": [-1, 4]}},
            "outputs": {"scores": {"name": "scores:0", "dtype": "float32", "shape": [-1, 3]}},
        }
    }
    assert conf["eas_processors"] == list(runtimes.PROCESSORS)


def test_mlflow_signature_and_pyfunc_config(saved):
    mlmodel = _mlmodel(saved)
    outputs = json.loads(mlmodel["signature"]["outputs"])
    params = json.loads(mlmodel["signature"]["params"])
    # A tabular input (one numeric (-1, 4) tensor) has no MLflow input schema: MLflow would
    # refuse DataFrames of feature columns and CSV before predict sees them (metadata.py).
    assert mlmodel["signature"]["inputs"] is None
    # Outputs are columns, from which spark_udf infers array<float>.
    assert outputs == [{"type": "array", "items": {"type": "float"}, "name": "scores", "required": True}]
    assert params == [{"name": "signature_name", "default": None, "shape": None, "type": "string"},
                      {"name": "output", "default": None, "shape": None, "type": "string"}]
    pyfunc_conf = mlmodel["flavors"]["python_function"]
    assert pyfunc_conf["loader_module"] == "mlflow_eas_savedmodel.pyfunc"
    assert pyfunc_conf["data"] == "savedmodel"
    assert pyfunc_conf["config"] == {"device": None, "signature_name": None, "output": None, "verify_integrity": None}
    assert mlmodel["saved_input_example_info"]["type"] == "ndarray"


def test_artifact_is_a_plain_eas_savedmodel(saved):
    sm = saved / "savedmodel"
    assert sorted(os.listdir(sm)) == ["saved_model.pb", "variables"]
    assert sorted(os.listdir(sm / "variables")) == ["variables.data-00000-of-00001", "variables.index"]
    # Weights live in variables/, not in the graph protobuf.
    assert os.path.getsize(sm / "saved_model.pb") < 20_000


def test_tf1_loader_runs_it_by_tensor_names(saved, mlp, x4, tf):
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(saved / "savedmodel"))
        ops = {n.op for n in meta.graph_def.node}
        y = sess.run("scores:0", {"image:0": x4})
    assert "VariableV2" in ops and "VarHandleOp" not in ops and "ReadVariableOp" not in ops
    np.testing.assert_allclose(y, mlp(x4).numpy(), rtol=1e-5)


def test_tf2_loader_runs_the_signature(saved, mlp, x4, tf):
    loaded = tf.saved_model.load(str(saved / "savedmodel"))
    y = loaded.signatures["serving_default"](image=tf.constant(x4))["scores"].numpy()
    np.testing.assert_allclose(y, mlp(x4).numpy(), rtol=1e-5)


def test_requirements_are_pinned_without_inference(saved, tf):
    import importlib.metadata

    reqs = (saved / "requirements.txt").read_text().split()
    assert f"tensorflow-cpu=={importlib.metadata.version('tensorflow-cpu')}" in reqs
    assert f"mlflow=={mlflow.__version__}" in reqs
    assert not any(r.startswith("cloudpickle") for r in reqs)  # no custom objects, no pickling
    defaults = mes.get_default_pip_requirements()
    assert defaults[-1].startswith("mlflow-eas-savedmodel==")
    if bundle.installed_from_index():  # the pin resolves from that index
        assert reqs == defaults and not (saved / "wheels").exists()
    else:  # a checkout or editable install (as in CI): the model carries the wheel by default
        assert reqs[:-1] == defaults[:-1] and reqs[-1] == f"wheels/{os.listdir(saved / 'wheels')[0]}"
    conda = mes.get_default_conda_env()
    assert {"pip": defaults} in conda["dependencies"]


def test_log_load_through_run_and_registry_uris(tracking_uri, mlp, x4):
    with mlflow.start_run():
        info = mes.log_model(mlp, name="model", input_example=x4[:2], registered_model_name="mlp")
    expected = mlp(x4).numpy()
    for uri in (info.model_uri, "models:/mlp/1"):
        handle = mes.load_model(uri, device="cpu")
        np.testing.assert_allclose(handle.predict({"image": x4})["scores"], expected, rtol=1e-5)
        np.testing.assert_allclose(mlflow.pyfunc.load_model(uri).predict(x4), expected, rtol=1e-5)


def test_existing_target_path_is_refused(saved, mlp):
    with pytest.raises(MlflowException, match="already exists and is not empty. Save to a new path"):
        mes.save_model(mlp, saved)


def test_unknown_processor_is_refused_before_any_work(tmp_path, mlp):
    with pytest.raises(MlflowException, match="Unknown EAS processor 'tensorflow_cpu_9.9'. Use one of: tensorflow_cpu_1.12"):
        mes.save_model(mlp, tmp_path / "m", eas_processor="tensorflow_cpu_9.9")
    assert not os.listdir(tmp_path)


def test_requested_processor_is_recorded_when_compatible(tmp_path, mlp):
    mes.save_model(mlp, tmp_path / "m", eas_processor="tensorflow_gpu_1.12")
    assert "tensorflow_gpu_1.12" in _mlmodel(tmp_path / "m")["flavors"][mes.FLAVOR_NAME]["eas_processors"]


def test_unsupported_object_names_the_supported_kinds(tmp_path):
    with pytest.raises(MlflowException, match="Cannot log an object of type builtins.dict. Pass a Keras model"):
        mes.save_model({"not": "a model"}, tmp_path / "m")
    assert not os.listdir(tmp_path)


def test_option_the_source_does_not_take_is_named(tmp_path, mlp):
    with pytest.raises(MlflowException, match="`init_op=` cannot be used with a keras source"):
        mes.save_model(mlp, tmp_path / "m", init_op="x")
    assert not os.listdir(tmp_path)


def test_loading_another_flavor_names_it(tmp_path):
    class Identity(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    mlflow.pyfunc.save_model(tmp_path / "other", python_model=Identity())
    with pytest.raises(MlflowException, match=r"was not saved by mlflow_eas_savedmodel \(its flavors: \['python_function'\]\)"):
        mes.load_model(str(tmp_path / "other"))


def test_saved_model_cli_shows_and_runs_it(saved, mlp, tmp_path):
    import subprocess
    import sys

    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    sm = str(saved / "savedmodel")
    shown = subprocess.run([cli, "show", "--dir", sm, "--all"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "signature_def['serving_default']" in shown.stdout and "name: image:0" in shown.stdout
    x = np.random.default_rng(4).random((2, 4), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    ran = subprocess.run(
        [cli, "run", "--dir", sm, "--tag_set", "serve", "--signature_def", "serving_default",
         "--inputs", f"image={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out" / "scores.npy"), mlp(x).numpy(), rtol=1e-5)
