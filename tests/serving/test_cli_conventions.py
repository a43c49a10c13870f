"""The CLI's conventions: -m/--model-uri beside the positional MODEL_URI, --version, -h,
--tracking-uri/--registry-uri on every command that reads a store, and ``serve`` (MLflow's own
``mlflow models serve``) working with the venv not activated."""

import importlib.metadata
import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import requests
from click.testing import CliRunner

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.cli import cli
from support.servers import ServerProcess, free_port

SCRIPT = os.path.join(os.path.dirname(sys.executable), "mlflow-eas-savedmodel")
MODEL_COMMANDS = ["inspect", "export", "eas-config", "serve-eas", "check-runtime", "warmup", "serve"]
X = np.array([[1, 2, 3, 4], [0, 0, 0, 1]], dtype=np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mlp):
    path = tmp_path_factory.mktemp("cli_conventions") / "model"
    mes.save_model(mlp, path, input_example=X)
    return str(path)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, mlp):
    """``models:/mnist/1`` in a sqlite store that MLflow is *not* pointed at afterwards."""
    root = tmp_path_factory.mktemp("cli_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        experiment = mlflow.create_experiment("cli", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            mes.log_model(mlp, name="model", registered_model_name="mnist", input_example=X)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    return uri, root


def _script_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING") and k != "MLFLOW_REGISTRY_URI"}
    env["PATH"] = "/usr/bin:/bin"  # the venv is not activated
    env.update(extra)
    return env


def test_version_and_short_help():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output == f"mlflow-eas-savedmodel {importlib.metadata.version('mlflow-eas-savedmodel')}\n"
    for args in ([], *[[name] for name in sorted(cli.commands)]):
        result = CliRunner().invoke(cli, [*args, "-h"])
        assert result.exit_code == 0 and result.output.startswith("Usage: "), (args, result.output)


def test_every_model_command_takes_model_uri_and_the_store_uris():
    for name, command in cli.commands.items():
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        if name == "prepare-runtimes":  # reads no store and takes no model
            continue
        assert {"--tracking-uri", "--registry-uri"} <= options, name
        if name in MODEL_COMMANDS:
            assert {"-m", "--model-uri"} <= options, name
    assert sorted(set(cli.commands) - set(MODEL_COMMANDS)) == ["prepare-runtimes", "promote", "tag"]


def test_model_uri_option_and_positional_give_the_same_result(saved, tmp_path):
    positional = CliRunner().invoke(cli, ["inspect", saved, "--json"])
    option = CliRunner().invoke(cli, ["inspect", "-m", saved, "--json"])
    assert positional.exit_code == option.exit_code == 0 and json.loads(positional.output) == json.loads(option.output)
    # A positional after the model (export DEST) works with -m too.
    result = CliRunner().invoke(cli, ["export", "-m", saved, str(tmp_path / "upload")])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "upload")) == ["SHA256SUMS", "savedmodel"]
    result = CliRunner().invoke(cli, ["export", "--model-uri", saved])
    assert result.exit_code == 2 and "Missing argument DEST." in result.output
    result = CliRunner().invoke(cli, ["inspect", "-m", saved, saved])
    assert result.exit_code == 2 and f"Got the model twice: -m/--model-uri {saved!r} and the argument {saved!r}. Pass it one way." in result.output
    result = CliRunner().invoke(cli, ["inspect"])
    assert result.exit_code == 2 and "Missing argument MODEL_URI (or -m/--model-uri)." in result.output


def test_tracking_uri_option_reads_the_registry(registered, tmp_path):
    uri, _ = registered
    # The two runs are independent (the first names its store, the second reads ./mlflow.db):
    # started together, their MLflow imports overlap.
    with_option = subprocess.Popen(
        [SCRIPT, "inspect", "-m", "models:/mnist/1", "--json", "--tracking-uri", uri, "--registry-uri", uri],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_script_env(), cwd=str(tmp_path),
    )
    # Without it, MLflow's default store (./mlflow.db here, empty) has no such model.
    without = subprocess.Popen([SCRIPT, "inspect", "models:/mnist/1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=_script_env(), cwd=str(tmp_path))
    try:
        stdout, stderr = with_option.communicate(timeout=300)
        assert with_option.returncode == 0, stderr
        assert list(json.loads(stdout)["signature_defs"]) == ["serving_default"]
        _, stderr = without.communicate(timeout=300)
        assert without.returncode == 1 and "Registered Model with name=mnist not found" in stderr, stderr
    finally:
        for process in (with_option, without):
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.server
def test_serve_runs_mlflows_server_with_the_venv_not_activated(registered, mlp):
    uri, root = registered
    port = free_port()
    command = [SCRIPT, "serve", "-m", "models:/mnist/1", "-p", str(port), "-w", "1", "--tracking-uri", uri]
    with ServerProcess(command, f"http://127.0.0.1:{port}/ping", log_path=root / "serve.log",
                       env=_script_env(TF_CPP_MIN_LOG_LEVEL="2"), cwd=str(root)) as server:
        response = requests.post(server.url("/invocations"), json={"inputs": {"image": X.tolist()}}, timeout=60)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"], mlp(X).numpy(), rtol=1e-5, atol=1e-6)
