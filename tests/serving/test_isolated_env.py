"""A model that carries this package: servable from an environment built from its requirements.

``save_model`` stores this package's wheel under ``wheels/`` and names it in ``requirements.txt``
by default when the package was not installed from an index (as here: an editable install), and
always with ``bundle_package=True``. The end-to-end test serves the registered model with
``mlflow models serve --env-manager uv``, which creates a fresh venv from the model's own
``python_env.yaml``/``requirements.txt`` (TensorFlow and MLflow from the index, this package from
the wheel), and checks the answer and where the served package was imported from.

Measured on 2 busy cores with uv's cache warm (as after ``dev.py`` installed the same pins):
about 20 s to build the env and answer /ping. With a cold cache uv downloads TensorFlow and
MLflow (~400 MB) first; ``--env-manager virtualenv`` (pip, no shared cache) takes minutes.
"""

import importlib.metadata
import os
import subprocess
import zipfile

import mlflow
import numpy as np
import pytest
import requests
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import bundle
from support.servers import ServerProcess, free_port, mlflow_command, server_env


def _requirements(model_dir):
    return (model_dir / "requirements.txt").read_text().splitlines()


@pytest.fixture(scope="module")
def bundled_model(tmp_path_factory, mlp):
    if bundle.source_tree() is None:
        pytest.skip("the package is not imported from a source checkout, so no wheel can be built")
    path = tmp_path_factory.mktemp("bundled") / "model"
    mes.save_model(mlp, path, bundle_package=True)
    return path


def test_bundled_model_names_its_wheel_instead_of_the_index_package(bundled_model):
    wheels = os.listdir(bundled_model / "wheels")
    assert len(wheels) == 1 and wheels[0].startswith("mlflow_eas_savedmodel-") and wheels[0].endswith(".whl")
    requirements = _requirements(bundled_model)
    assert requirements[-1] == f"wheels/{wheels[0]}"
    assert not any(line.startswith("mlflow-eas-savedmodel") for line in requirements)
    assert any(line.startswith("tensorflow-cpu==") for line in requirements)
    assert f"wheels/{wheels[0]}" in (bundled_model / "conda.yaml").read_text()

    with zipfile.ZipFile(bundled_model / "wheels" / wheels[0]) as wheel:
        names = set(wheel.namelist())
    for module in ("__init__.py", "save.py", "load.py", "flavor_conf.py", "pyfunc.py", "model.py", "runtimes/registries/tf-1.15.json.gz"):
        assert f"mlflow_eas_savedmodel/{module}" in names


def test_prebuilt_wheel_is_copied(bundled_model, mlp, tmp_path):
    wheel = next((bundled_model / "wheels").glob("*.whl"))
    mes.save_model(mlp, tmp_path / "model", bundle_package=wheel)
    assert (tmp_path / "model" / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
    assert _requirements(tmp_path / "model")[-1] == f"wheels/{wheel.name}"


def test_bundle_package_rejects_a_file_that_is_not_our_wheel(mlp, tmp_path):
    other = tmp_path / "numpy-2.0-py3-none-any.whl"
    other.write_bytes(b"PK")
    with pytest.raises(MlflowException, match=r"is not a wheel of mlflow-eas-savedmodel \(mlflow_eas_savedmodel-<version>-py3-none-any.whl\)"):
        mes.save_model(mlp, tmp_path / "model", bundle_package=other)
    assert not (tmp_path / "model").exists()


@pytest.mark.server
@pytest.mark.slow
def test_serve_with_env_built_from_the_models_own_requirements(tracking_uri, mlp, x4, tmp_path):
    with mlflow.start_run():
        # No bundle_package: the default carries the wheel where the package is not from an index.
        mes.log_model(mlp, name="model", registered_model_name="isolated")
    env_root = tmp_path / "envs"
    port = free_port()
    command = mlflow_command(
        "models", "serve", "-m", "models:/isolated/1", "--env-manager", "uv",
        "-h", "127.0.0.1", "-p", str(port),
    )
    # cwd is not the checkout: uvicorn puts its working folder on sys.path, which would import
    # the package from the source tree instead of the environment.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = server_env(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_ENV_ROOT=env_root)
    with ServerProcess(
        command, f"http://127.0.0.1:{port}/ping", log_path=tmp_path / "serve.log", env=env,
        timeout=580, cwd=workdir,
    ) as server:
        response = requests.post(server.url("/invocations"), json={"inputs": x4.tolist()}, timeout=60)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"], mlp(x4).numpy(), rtol=1e-5, atol=1e-6)

        bad = requests.post(server.url("/invocations"), json={"inputs": [[1.0, 2.0]]}, timeout=60)
        assert bad.status_code == 400
        assert (
            "Input 'image' of signature 'serving_default' has shape (1, 2), but the signature expects "
            "(None, 4)" in bad.json()["message"]
        )

    (env_dir,) = [p for p in env_root.iterdir() if p.is_dir() and p.name.startswith("mlflow-")]
    located = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c",
         "import mlflow_eas_savedmodel, importlib.metadata as m; "
         "print(mlflow_eas_savedmodel.__file__); print(m.version('mlflow-eas-savedmodel'))"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    assert located.returncode == 0, located.stderr
    module_file, version = located.stdout.split()
    assert module_file.startswith(str(env_dir)), module_file  # installed from the wheel
    assert version == importlib.metadata.version("mlflow-eas-savedmodel")


def test_default_bundles_where_the_package_is_not_from_an_index(mlp, tmp_path):
    if bundle.installed_from_index():
        pytest.skip("installed from a package index: the pinned requirement resolves there")
    mes.save_model(mlp, tmp_path / "auto")
    (wheel,) = os.listdir(tmp_path / "auto" / "wheels")
    assert _requirements(tmp_path / "auto")[-1] == f"wheels/{wheel}"
    # Built once per source state, then copied: the same bytes as an explicit bundle.
    mes.save_model(mlp, tmp_path / "explicit", bundle_package=True)
    assert (tmp_path / "auto" / "wheels" / wheel).read_bytes() == (tmp_path / "explicit" / "wheels" / wheel).read_bytes()
    mes.save_model(mlp, tmp_path / "never", bundle_package=False)
    assert not (tmp_path / "never" / "wheels").exists()
    assert _requirements(tmp_path / "never")[-1] == f"mlflow-eas-savedmodel=={importlib.metadata.version('mlflow-eas-savedmodel')}"
