"""MLflow habits, as a user types them (issue 22 items 1, 5, 6, 7, 8): installs that carry the
package, ``export --warmup`` inside DEST, EAS facts as MLflow tags, the CLI's friction, and
``log_model``'s named arguments. A real sqlite store per test (conftest's ``tracking_uri``)."""

import inspect
import os

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.cli import cli

X = np.random.default_rng(22).random((3, 4), dtype=np.float32)


# ------------------------------------------------------------------ item 8: log_model's arguments


def test_log_model_names_and_documents_every_save_model_argument():
    log_params = inspect.signature(mes.log_model).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in log_params.values())
    save_params = set(inspect.signature(mes.save_model).parameters) - {"path", "mlflow_model"}
    assert save_params <= set(log_params), save_params - set(log_params)
    doc = mes.log_model.__doc__
    for name in (*save_params, "name", "registered_model_name", "params", "tags", "model_id"):
        assert f"\n        {name}: " in doc, name
    assert "{{" not in doc  # MLflow's LOG_MODEL_PARAM_DOCS filled in
    assert "If ``None``, a conda environment with pip requirements" in doc


def test_conflicting_environment_arguments_fail_before_the_export(tracking_uri, mlp, monkeypatch):
    from mlflow_eas_savedmodel import export

    def no_export(*args, **kwargs):
        raise AssertionError("the export ran")

    monkeypatch.setattr(export, "export", no_export)
    message = (
        "Only one of `conda_env`, `pip_requirements`, and `extra_pip_requirements` can be "
        "specified. Pass one of them: put extra requirements into conda_env's pip section, or "
        "use pip_requirements (the full list) or extra_pip_requirements (added to the defaults)."
    )
    with mlflow.start_run() as run:
        with pytest.raises(MlflowException) as e:
            mes.log_model(mlp, name="model", conda_env={"dependencies": []}, pip_requirements=["numpy"])
    assert e.value.message == message
    assert mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list") == []
    with pytest.raises(MlflowException) as e:
        mes.save_model(mlp, "m", pip_requirements=["numpy"], extra_pip_requirements=["pandas"])
    assert e.value.message == message
    assert not os.path.exists("m")


# ------------------------------------------------------- item 6: EAS facts where MLflow users look


def test_logged_model_carries_eas_tags_found_by_search_logged_models(tracking_uri, mlp, tf):
    with mlflow.start_run():
        info = mes.log_model(mlp, name="model", input_example=X)
    conf = info.flavors[mes.FLAVOR_NAME]
    found = mlflow.search_logged_models(
        filter_string="tags.`eas.processors` LIKE '%tensorflow_cpu_1.15%'", output_format="list"
    )
    assert [m.model_id for m in found] == [info.model_id]
    tags = found[0].tags
    assert tags["eas.processors"] == ",".join(conf["eas_processors"])
    assert tags["eas.tf_version"] == tf.__version__
    assert tags["eas.verification"].startswith(f"passed: 1 SignatureDef(s) ran in TF {tf.__version__}, matching the source")
    with mlflow.start_run():
        static = mes.log_model(mlp, name="model", verify="static")
    assert MlflowClient().get_logged_model(static.model_id).tags["eas.verification"] == (
        "static checks only: run skipped (verify='static')"
    )


def _register_plainly(mlp, name):
    """``mlflow.register_model`` on a logged model: no tags from this package at registration."""
    with mlflow.start_run():
        info = mes.log_model(mlp, name="model")
    version = mlflow.register_model(info.model_uri, name).version
    assert "eas.processors" not in MlflowClient().get_model_version(name, version).tags
    return info, version


def _search(processor="tensorflow_cpu_1.15"):
    found = MlflowClient().search_model_versions(f"tags.`eas.processors` LIKE '%{processor}%'")
    return [(v.name, str(v.version)) for v in found]


def test_a_plainly_registered_version_is_tagged_on_first_use_by_a_command(tracking_uri, mlp, tf):
    info, version = _register_plainly(mlp, "houses")
    result = CliRunner().invoke(cli, ["inspect", "-m", "models:/houses/1"])
    assert result.exit_code == 0, result.output
    tags = MlflowClient().get_model_version("houses", version).tags
    assert tags["eas.processors"] == ",".join(info.flavors[mes.FLAVOR_NAME]["eas_processors"])
    assert tags["eas.tf_version"] == tf.__version__
    assert _search() == [("houses", "1")]  # the README's search finds it now


def test_tag_command_tags_every_version_and_skips_other_flavors(tracking_uri, mlp):
    _register_plainly(mlp, "houses")
    _register_plainly(mlp, "houses")

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    with mlflow.start_run():
        other = mlflow.pyfunc.log_model(name="other", python_model=Echo(), pip_requirements=[])
    mlflow.register_model(other.model_uri, "houses")
    assert _search() == []

    result = CliRunner().invoke(cli, ["tag", "houses", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Tagged 'houses' version 2: eas.processors='tensorflow_cpu_1.12,")
    assert _search() == [("houses", "2")]

    result = CliRunner().invoke(cli, ["tag", "houses"])
    assert result.exit_code == 0, result.output
    assert "Skipped 'houses' version 3: not saved by mlflow_eas_savedmodel." in result.output
    assert sorted(_search()) == [("houses", "1"), ("houses", "2")]

    result = CliRunner().invoke(cli, ["tag", "nobody"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: Registered model 'nobody' has no versions. Register one first "
        "(log_model(..., registered_model_name=...) or mlflow.register_model)."
    )


# ------------------------------------------------ item 1: every non-index install carries the package

_PROBE = r"""
import json, logging, os, sys
from mlflow_eas_savedmodel import bundle
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="WARNING %(message)s")
import mlflow_eas_savedmodel
wheel = bundle.default_bundle()
print(json.dumps({"module": mlflow_eas_savedmodel.__file__, "from_index": bundle.installed_from_index(),
                  "wheel": wheel}))
# An installed file changed after the install: the wheel would not be what was installed.
changed = os.path.join(os.path.dirname(mlflow_eas_savedmodel.__file__), "verify.py")
with open(changed, "a") as f:
    f.write("# edited\n")
print(json.dumps({"after_edit": bundle.default_bundle()}))
"""


def _fresh_venv(tmp_path, name):
    """A venv without pip whose dependencies (mlflow, TensorFlow) come from this one, not the
    network: a ``.pth`` appends this venv's site-packages after the new one's, whose own
    packages come first (the outer ``.pth`` files, the editable install among them, are not run)."""
    import subprocess
    import sys
    import sysconfig

    env = tmp_path / name
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    (site,) = (env / "lib").glob("python3.*/site-packages")
    (site / "zz_dependencies_from_the_test_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env, site


def _pip_into(env, *args):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--quiet",
         "--no-index", "--no-deps", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_clone_installed_with_pip_carries_a_wheel_that_installs_offline(tmp_path):
    """``pip install .`` from a clone (not editable): ``direct_url.json`` names the folder. The
    model's wheel is repacked from the installed files and installs with ``--no-index``."""
    import json
    import subprocess
    import zipfile

    from mlflow_eas_savedmodel import bundle

    if bundle.source_tree() is None:
        pytest.skip("the package is not imported from a source checkout: no clone to install")
    clone = tmp_path / "clone"
    bundle._copy_sources(bundle.source_tree(), str(clone))  # what setuptools builds from
    env, site = _fresh_venv(tmp_path, "clone-env")
    _pip_into(env, "--no-build-isolation", str(clone))
    (dist_info,) = site.glob("mlflow_eas_savedmodel-*.dist-info")
    assert json.loads((dist_info / "direct_url.json").read_text()) == {"dir_info": {}, "url": clone.as_uri()}

    probe = subprocess.run(
        [str(env / "bin" / "python"), "-c", _PROBE], capture_output=True, text=True, timeout=300,
        cwd=tmp_path, env={**os.environ, "MLFLOW_EAS_SAVEDMODEL_CACHE": str(tmp_path / "cache")},
    )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.strip().splitlines()
    first = json.loads(lines[0])
    assert first["module"] == str(site / "mlflow_eas_savedmodel" / "__init__.py")
    assert first["from_index"] is False
    wheel = first["wheel"]
    assert wheel.startswith(str(tmp_path / "cache" / "wheels" / "installed-"))
    version = dist_info.name[len("mlflow_eas_savedmodel-"):-len(".dist-info")]
    assert os.path.basename(wheel) == f"mlflow_eas_savedmodel-{version}-py3-none-any.whl"
    assert json.loads(lines[-1]) == {"after_edit": None}
    assert "changed since the install (its SHA-256 differs from RECORD's)" in probe.stdout

    # The wheel holds exactly the installed files (as they were), and installs offline.
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("mlflow_eas_savedmodel/save.py") == (site / "mlflow_eas_savedmodel" / "save.py").read_bytes()
    assert {f"{dist_info.name}/METADATA", f"{dist_info.name}/entry_points.txt", f"{dist_info.name}/RECORD"} <= names
    assert not any(n.endswith((".pyc", "direct_url.json", "INSTALLER")) for n in names)
    other, other_site = _fresh_venv(tmp_path, "model-env")
    _pip_into(other, wheel)
    # Where the new env finds the package and its metadata (importing it would cost an MLflow
    # import; its files are the ones the clone env just imported, byte for byte).
    located = subprocess.run(
        [str(other / "bin" / "python"), "-c",
         "import importlib.util as u, importlib.metadata as md; "
         "print(u.find_spec('mlflow_eas_savedmodel').origin); print(md.version('mlflow-eas-savedmodel'))"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert located.returncode == 0, located.stderr
    assert located.stdout.split() == [str(other_site / "mlflow_eas_savedmodel" / "__init__.py"), version]
    with zipfile.ZipFile(wheel) as archive:
        for name in names - {f"{dist_info.name}/RECORD"}:
            assert (other_site / name).read_bytes() == archive.read(name), name
    assert (other / "bin" / "mlflow-eas-savedmodel").exists()  # the console script, from entry_points.txt


_LOG_AND_REGISTER = r"""
import sys, keras, mlflow, numpy as np
import mlflow_eas_savedmodel as mes
mlflow.set_tracking_uri(sys.argv[1])
keras.utils.set_random_seed(0)
image = keras.Input((4,), name="image")
model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
with mlflow.start_run():
    mes.log_model(model, name="model", registered_model_name="houses")
np.save(sys.argv[2], model(np.ones((2, 4), np.float32)).numpy())
print(mes.__file__)
"""


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("route", ["clone", "editable", "wheel"])
def test_every_install_route_logs_a_model_that_mlflow_serves_with_uv(route, tmp_path):
    """Per install route, a fresh venv logs a model, and ``mlflow models serve --env-manager uv``
    builds the model's own environment from its requirements and answers. Opt-in
    (``MLFLOW_EAS_SAVEDMODEL_INSTALL_ROUTES=1``, uv's cache warm or the network reachable): ~2
    minutes per route on 2 busy cores."""
    import subprocess

    import requests
    from support.servers import ServerProcess, free_port, server_env
    from support.stores import sqlite_store

    from mlflow_eas_savedmodel import bundle

    if not os.environ.get("MLFLOW_EAS_SAVEDMODEL_INSTALL_ROUTES"):
        pytest.skip("opt-in: MLFLOW_EAS_SAVEDMODEL_INSTALL_ROUTES=1 (builds a uv env per route)")
    clone = tmp_path / "clone"
    bundle._copy_sources(bundle.source_tree(), str(clone))
    env, site = _fresh_venv(tmp_path, f"{route}-env")
    if route == "clone":
        _pip_into(env, "--no-build-isolation", str(clone))
    elif route == "editable":
        _pip_into(env, "--no-build-isolation", "-e", str(clone))
    else:
        _pip_into(env, bundle.build_wheel(str(tmp_path / "dist")))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    with sqlite_store(tmp_path, "routes") as uri:
        logged = subprocess.run(
            [str(env / "bin" / "python"), "-c", _LOG_AND_REGISTER, uri, str(tmp_path / "expected.npy")],
            capture_output=True, text=True, timeout=600, cwd=workdir,
            env={**os.environ, "MLFLOW_EAS_SAVEDMODEL_CACHE": str(tmp_path / "cache")},
        )
        assert logged.returncode == 0, logged.stderr[-3000:]
        assert "cannot be rebuilt" not in logged.stderr and "without carrying it" not in logged.stderr
        assert logged.stdout.split()[-1].startswith(str(clone if route == "editable" else site))
        port = free_port()
        command = [str(env / "bin" / "python"), "-m", "mlflow", "models", "serve", "-m", "models:/houses/1",
                   "--env-manager", "uv", "-h", "127.0.0.1", "-p", str(port)]
        serve_env = server_env(MLFLOW_TRACKING_URI=uri, MLFLOW_ENV_ROOT=tmp_path / "envs")
        with ServerProcess(command, f"http://127.0.0.1:{port}/ping", log_path=tmp_path / "serve.log",
                           env=serve_env, timeout=900, cwd=workdir) as server:
            response = requests.post(server.url("/invocations"), json={"inputs": np.ones((2, 4)).tolist()}, timeout=60)
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["predictions"], np.load(tmp_path / "expected.npy"), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ item 5: export DEST --warmup, inside DEST


def test_two_exports_with_warmup_into_sibling_folders_write_only_inside_each(mlp, tmp_path):
    from mlflow_eas_savedmodel.eas.package import verify_manifest

    mes.save_model(mlp, tmp_path / "model", input_example=X, verify="static")
    upload = tmp_path / "upload"
    for dest in ("v1", "v2"):
        result = CliRunner().invoke(cli, ["export", "-m", str(tmp_path / "model"), str(upload / dest), "--warmup"])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[0] == f"Wrote 6 files into {upload / dest}:"
        assert sorted(os.listdir(upload / dest)) == ["SHA256SUMS", "savedmodel", "warm_up_serving_default.bin"]
        assert verify_manifest(str(upload / dest / "SHA256SUMS")) == []
    assert sorted(os.listdir(upload)) == ["v1", "v2"]
    assert (upload / "v1" / "SHA256SUMS").read_bytes() == (upload / "v2" / "SHA256SUMS").read_bytes()


# ------------------------------------------------------------------------------- item 7: friction


def test_prepare_runtimes_names_the_missing_interpreter_and_tries_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pyenv, no uv-managed interpreters
    monkeypatch.delenv("PYENV_ROOT", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("MLFLOW_EAS_SAVEDMODEL_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(cli, ["prepare-runtimes", "1.12", "tensorflow_cpu_2.7"])
    if "ready" in result.output:
        pytest.skip("a CPython 3.6/3.9 is installed system-wide: nothing is missing here")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert (
        "TF 1.12 runtime: not built: No CPython 3.6 interpreter found (needed by the EAS TensorFlow "
        "1.12 runtime: the official wheel tensorflow==1.12.0 exists only for CPython 3.6). Install "
        "one with `pyenv install 3.6` or `uv python install 3.6`"
    ) in result.output
    assert "TF 2.7 runtime: not built: No CPython 3.9 interpreter found" in result.output
    assert lines[-1] == "Error: 2 runtime(s) not built: 1.12, 2.7 (reasons above)."
    result = CliRunner().invoke(cli, ["prepare-runtimes", "9.9"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: Unknown EAS TensorFlow runtime '9.9'; known: 1.12, 1.14, 1.15, 2.3, 2.4, 2.7"


@pytest.mark.runtime
def test_prepare_runtimes_reports_a_ready_runtime():
    result = CliRunner().invoke(cli, ["prepare-runtimes", "1.15", "--json"])
    assert result.exit_code == 0, result.output
    import json

    (line,) = [line for line in result.output.splitlines() if line.startswith("{")]
    ready = json.loads(line)
    assert ready["tf_version"] == "1.15" and ready["wheel"] == "tensorflow-cpu==1.15.0"
    assert ready["interpreter_version"].startswith("3.7.")
    assert os.path.isfile(ready["python"])


@pytest.mark.slow
def test_dev_py_wheel_builds_with_pip_wheel_no_deps(tmp_path):
    """``python3.11 dev.py wheel``: pip's PEP 517 build (setuptools in pip's isolated build env),
    no dependency of the package installed, no ``.venv`` set up."""
    import subprocess
    import sys
    import zipfile

    from mlflow_eas_savedmodel import bundle

    if bundle.source_tree() is None:
        pytest.skip("needs the source checkout's dev.py")
    dev = os.path.join(bundle.source_tree(), "dev.py")
    result = subprocess.run([sys.executable, dev, "wheel", str(tmp_path / "dist")], capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert len(commands) == 1 and " -m pip wheel --no-deps " in commands[0], result.stdout
    (wheel,) = (tmp_path / "dist").iterdir()
    assert result.stdout.splitlines()[-1] == str(wheel)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "mlflow_eas_savedmodel/save.py" in names and "mlflow_eas_savedmodel/runtimes/registries/tf-1.15.json.gz" in names
    assert not any("__pycache__" in n for n in names)
