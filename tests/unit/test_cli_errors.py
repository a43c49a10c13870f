"""Every user fault of the CLI ends with ``Error: ...`` naming the fix and a non-zero exit,
never a traceback; network calls give up in seconds. Runs the real click group in-process."""

import socket
import time

import pytest
from click.testing import CliRunner

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.cli import cli
from mlflow_eas_savedmodel.cli_errors import NETWORK_DEFAULTS
from support.mlmodel import read_mlmodel, write_mlmodel


@pytest.fixture(scope="module")
def model(tmp_path_factory, mlp):
    path = tmp_path_factory.mktemp("cli-errors") / "model"
    mes.save_model(mlp, path)
    return str(path)


@pytest.fixture(autouse=True)
def _fresh_network_env(monkeypatch):
    for name in NETWORK_DEFAULTS:
        monkeypatch.delenv(name, raising=False)  # restored after the test: the CLI sets them


def _fails(args, *expected, exit_code=1):
    result = CliRunner().invoke(cli, args)
    output = result.output
    assert result.exit_code == exit_code, (result.exit_code, output, result.exception)
    assert "Traceback" not in output
    assert isinstance(result.exception, SystemExit), result.exception
    last = output.strip().splitlines()[-1]
    assert last.startswith("Error: "), output
    for text in expected:
        assert text in last, last
    return last


def test_port_out_of_range(model):
    _fails(["serve-eas", model, "--name", "m", "--port", "99999"],
           "Invalid value for '-p' / '--port': 99999 is not in the range 0<=x<=65535", exit_code=2)


def test_port_in_use(model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _fails(["serve-eas", model, "--name", "m", "--port", str(port)],
               "Address already in use", "the port is in use: pick another --port")


def test_export_under_a_file(model, tmp_path):
    (tmp_path / "afile").write_text("x")
    _fails(["export", model, str(tmp_path / "afile" / "upload")],
           f"{str(tmp_path / 'afile')!r}", "pick a new path")


def test_export_into_proc(model):
    _fails(["export", model, "/proc/upload"], "'/proc/.upload.partial-", "check the path")


def test_warmup_onto_a_file(model, tmp_path):
    (tmp_path / "afile").write_text("x")
    _fails(["warmup", model, str(tmp_path / "afile")], "File exists", "pick a new path")


def test_promote_with_an_unsupported_tracking_uri():
    _fails(["promote", "m", "1", "--tracking-uri", "bogus://x", "--registry-uri", "bogus://x"],
           "unsupported URI 'bogus://x'", "Check --tracking-uri")


def test_promote_against_an_unreachable_server_fails_fast():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        start = time.monotonic()
        uri = f"http://127.0.0.1:{port}"
        _fails(["promote", "m", "1", "--tracking-uri", uri, "--registry-uri", uri],
               "Connection refused", "Check --tracking-uri")
    assert time.monotonic() - start < 60  # MLflow's own defaults retry for minutes


def test_unreadable_model(tmp_path):
    (tmp_path / "model" / "MLmodel").mkdir(parents=True)
    _fails(["inspect", str(tmp_path / "model")], "Cannot read the MLmodel file", "Is a directory")
    _fails(["export", str(tmp_path / "model"), str(tmp_path / "up")], "Cannot read the MLmodel file")


def test_mlmodel_with_a_key_removed(model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    doc = read_mlmodel(copy)
    del doc["flavors"]["eas_savedmodel"]["signature_defs"]
    write_mlmodel(copy, doc)
    for command in (["inspect", str(copy)], ["export", str(copy), str(tmp_path / "up")],
                    ["warmup", str(copy), str(tmp_path / "w")]):
        _fails(command, "is damaged: the key eas_savedmodel.signature_defs is missing")
