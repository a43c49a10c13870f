"""Registration and promotion against a real ``mlflow server`` (sqlite backend, HTTP artifacts)."""

import os
import shutil
import subprocess

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.flavor_conf import FlavorConf
from mlflow_eas_savedmodel.registry import PromotionRefused, promote, signature_changes
from support.servers import VENV_BIN, ServerProcess, free_port, mlflow_command, server_env

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """``mlflow server`` on a free loopback port; artifacts are uploaded through it (HTTP)."""
    root = tmp_path_factory.mktemp("tracking-server")
    port = free_port()
    command = mlflow_command(
        "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    )
    uri = f"http://127.0.0.1:{port}"
    with ServerProcess(command, f"{uri}/health", log_path=root / "server.log"), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        mlflow.set_experiment("registry-tests")
        try:
            yield uri
        finally:
            mlflow.end_run()
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def wide_mlp(tf):
    """Like ``mlp`` but with 8 input features and a ``probs`` output: a breaking change."""
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((8,), name="image")
    out = keras.layers.Dense(3, activation="softmax", name="probs")(inp)
    return keras.Model(inp, out, name="wide")


def _log(model, registered_model_name, **kwargs):
    with mlflow.start_run() as run:
        info = mes.log_model(model, name="model", registered_model_name=registered_model_name, **kwargs)
    return run.info.run_id, info


@pytest.fixture(scope="module")
def mnist(tracking_server, mlp, wide_mlp):
    """``mnist`` versions 1 and 2 (the same MLP) and 3 (a breaking change of the signature)."""
    runs = [_log(mlp, "mnist")[0], _log(mlp, "mnist")[0], _log(wide_mlp, "mnist")[0]]
    return runs


def test_registered_version_loads_by_version_alias_and_run(mnist, mlp, x4):
    promote("mnist", 1)
    expected = mlp(x4).numpy()
    for uri in ("models:/mnist/1", "models:/mnist@champion", f"runs:/{mnist[0]}/model"):
        handle = mes.load_model(uri, device="cpu")
        np.testing.assert_allclose(handle.predict(x4)["scores"], expected, rtol=1e-5, atol=1e-6)
        pyfunc_model = mlflow.pyfunc.load_model(uri)
        np.testing.assert_allclose(pyfunc_model.predict(x4), expected, rtol=1e-5, atol=1e-6)


def test_promote_moves_alias_and_never_stages(mnist):
    client = MlflowClient()
    first = promote("mnist", 1, alias="candidate", client=client)
    assert (first.version, first.previous_version, first.differences, first.forced) == ("1", None, (), False)
    second = promote("mnist", "2", alias="candidate", client=client)
    assert (second.version, second.previous_version, second.forced) == ("2", "1", False)
    assert client.get_model_version_by_alias("mnist", "candidate").version == "2"
    assert {v.current_stage for v in client.search_model_versions("name='mnist'")} == {"None"}


def test_promote_refuses_changed_signature_and_lists_differences(mnist):
    client = MlflowClient()
    promote("mnist", 2, alias="stable", client=client)
    with pytest.raises(PromotionRefused, match=r"from version 2 to version 3") as refused:
        promote("mnist", 3, alias="stable", client=client)
    shown = [str(d) for d in refused.value.differences]
    assert shown == [
        "signature 'serving_default': input shape 'image' [None, 4] -> [None, 8]",
        "signature 'serving_default': output removed 'scores' (was float32[None, 3])",
        "signature 'serving_default': output added 'probs' (float32[None, 3])",
    ]
    for line in shown:
        assert line in refused.value.message
    assert "force=True" in refused.value.message
    assert client.get_model_version_by_alias("mnist", "stable").version == "2"

    forced = promote("mnist", 3, alias="stable", force=True, client=client)
    assert forced.forced and forced.previous_version == "2"
    assert [str(d) for d in forced.differences] == shown
    assert client.get_model_version_by_alias("mnist", "stable").version == "3"


def test_promote_refuses_a_model_of_another_flavor(tracking_server, mlp):
    class Identity(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model", python_model=Identity(), registered_model_name="foreign", pip_requirements=[]
        )
    with pytest.raises(MlflowException, match=r"models:/foreign/1' was not saved by mlflow_eas_savedmodel \(its flavors: \['python_function'\]\)"):
        promote("foreign", 1)
    client = MlflowClient()
    assert client.get_registered_model("foreign").aliases == {}

    # An alias set by another tool on a foreign model is a difference, forced only on request.
    client.set_registered_model_alias("foreign", "champion", "1")
    _log(mlp, "foreign")
    with pytest.raises(PromotionRefused, match=r"model: flavor python_function -> eas_savedmodel"):
        promote("foreign", 2)
    assert promote("foreign", 2, force=True).forced
    assert client.get_model_version_by_alias("foreign", "champion").version == "2"


def test_promote_refuses_unknown_version(mnist):
    with pytest.raises(MlflowException, match=r"Model Version \(name=mnist, version=99\) not found"):
        promote("mnist", 99)


def _register_folder(local_model, name):
    """Logs a local MLflow model folder as run artifacts and registers it."""
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(local_model), "model")
    return mlflow.register_model(f"runs:/{run.info.run_id}/model", name)


def test_promote_refuses_invalid_layout(tracking_server, mlp, tmp_path):
    local = tmp_path / "model"
    mes.save_model(mlp, local)
    (local / "savedmodel" / "notes.txt").write_text("not part of a SavedModel")
    _register_folder(local, "bad-layout")
    with pytest.raises(MlflowException, match=r"Version 1 of 'bad-layout' cannot be promoted: its SavedModel folder is invalid\. .* holds \['notes.txt'\] beside the SavedModel"):
        promote("bad-layout", 1)


def test_promote_verifies_recorded_sha256(tracking_server, mlp, tmp_path):
    intact = tmp_path / "intact"
    mes.save_model(mlp, intact)
    _register_folder(intact, "digests")
    assert promote("digests", 1).version == "1"

    damaged = tmp_path / "damaged"
    shutil.copytree(intact, damaged)
    data_file = next((damaged / "savedmodel" / "variables").glob("variables.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:-4])  # truncated after the save hashed it
    _register_folder(damaged, "digests")
    with pytest.raises(
        MlflowException,
        match=r"Version 2 of 'digests' cannot be promoted(.|\n)*'variables/variables\.data-00000-of-00001' was changed or truncated",
    ):
        promote("digests", 2)
    assert MlflowClient().get_model_version_by_alias("digests", "champion").version == "1"


def test_diff_names_method_dtype_signature_and_default_changes():
    tensor = {"name": "x:0", "dtype": "float32", "shape": [-1, 4]}
    before = {
        "default_signature": "serving_default",
        "signature_defs": {
            "serving_default": {"method_name": "tensorflow/serving/predict", "inputs": {"x": tensor}, "outputs": {"y": tensor}},
            "old": {"method_name": "tensorflow/serving/predict", "inputs": {"x": tensor}, "outputs": {"y": tensor}},
        },
    }
    after = {
        "default_signature": "new",
        "signature_defs": {
            "serving_default": {
                "method_name": "tensorflow/serving/classify",
                "inputs": {"x": {**tensor, "name": "other:0", "dtype": "int64"}},
                "outputs": {"y": {**tensor, "shape": None}},
            },
            "new": {"method_name": "tensorflow/serving/predict", "inputs": {"x": tensor}, "outputs": {"y": tensor}},
        },
    }
    before, after = FlavorConf(**before), FlavorConf(**after)
    assert [str(d) for d in signature_changes(before, after)] == [
        "model: default signature serving_default -> new",
        "signature 'old': signature removed",
        "signature 'new': signature added",
        "signature 'serving_default': method tensorflow/serving/predict -> tensorflow/serving/classify",
        "signature 'serving_default': input dtype 'x' float32 -> int64",
        "signature 'serving_default': output shape 'y' [None, 4] -> [unknown rank]",
    ]
    assert signature_changes(before, before) == []


def test_promote_uses_the_given_client_not_the_global_uris(mnist, tracking_server, tmp_path):
    client = MlflowClient(tracking_uri=tracking_server, registry_uri=tracking_server)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    mlflow.set_tracking_uri(elsewhere)
    mlflow.set_registry_uri(elsewhere)
    try:
        result = promote("mnist", 2, alias="via-client", client=client)
    finally:
        mlflow.set_tracking_uri(tracking_server)
        mlflow.set_registry_uri(tracking_server)
    assert result.version == "2"
    assert client.get_model_version_by_alias("mnist", "via-client").version == "2"


def _cli(*args, uri, cwd):
    script = os.path.join(VENV_BIN, "mlflow-eas-savedmodel")
    if not os.path.exists(script):
        pytest.fail(
            "The console script is missing: run "
            "`.venv/bin/uv pip install --python .venv/bin/python --no-deps -e .`"
        )
    return subprocess.run(
        [script, "promote", *args, "--tracking-uri", uri],
        capture_output=True, text=True, timeout=120, cwd=cwd,
        # Only --tracking-uri names the server: no environment variable, no store in cwd.
        env={k: v for k, v in server_env().items() if not k.startswith("MLFLOW_")},
    )


def test_cli_promote_refuses_then_forces(mnist, tracking_server, tmp_path):
    client = MlflowClient()
    ok = _cli("mnist", "1", "--alias", "cli", uri=tracking_server, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "Promoted 'mnist' version 1 to @cli." in ok.stdout

    refused = _cli("mnist", "3", "--alias", "cli", uri=tracking_server, cwd=tmp_path)
    assert refused.returncode == 1
    assert "Refusing to move @cli of 'mnist' from version 1 to version 3" in refused.stderr
    assert "  - signature 'serving_default': input shape 'image' [None, 4] -> [None, 8]" in refused.stderr
    assert "--force" in refused.stderr
    assert client.get_model_version_by_alias("mnist", "cli").version == "1"

    forced = _cli("mnist", "3", "--alias", "cli", "--force", uri=tracking_server, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "Promoted 'mnist' version 3 to @cli (was version 1)." in forced.stdout
    assert "output added 'probs'" in forced.stdout
    assert client.get_model_version_by_alias("mnist", "cli").version == "3"
