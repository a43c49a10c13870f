"""``artifact.open_model``: the one way a model URI becomes a folder, an MLmodel and a FlavorConf.

Real MLflow stores (sqlite, local artifacts); the models are MLmodel files written through
``FlavorConf.to_dict`` (what ``save_model`` writes), so no TensorFlow is needed.
"""

import ast
import os
import pathlib

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from mlflow_eas_savedmodel import artifact
from mlflow_eas_savedmodel.flavor_conf import FLAVOR_NAME, FlavorConf

TENSOR = {"name": "x:0", "dtype": "float32", "shape": [-1, 4]}
CONF = FlavorConf(
    default_signature="serving_default",
    signature_defs={"serving_default": {"method_name": "tensorflow/serving/predict",
                                        "inputs": {"x": TENSOR}, "outputs": {"y": TENSOR}}},
    eas_processors=["tensorflow_cpu_1.15"],
    verification={"static": "ok", "run": "skipped"},
    file_sha256={"saved_model.pb": "0" * 64},
)


def _model_folder(path, conf=CONF):
    os.makedirs(path)
    model = Model()
    model.add_flavor(FLAVOR_NAME, **conf.to_dict())
    model.save(os.path.join(path, "MLmodel"))
    return str(path)


def test_a_local_folder_is_opened_in_place(tmp_path):
    folder = _model_folder(tmp_path / "model")
    opened = artifact.open_model(folder)
    assert opened.path == folder and opened.is_this_flavor and opened.conf == CONF
    metadata = artifact.open_model(folder, mlmodel_only=True)
    assert metadata.path is None and metadata.conf == CONF


def test_runs_and_models_uris_resolve_through_the_stores(tracking_uri, tmp_path):
    folder = _model_folder(tmp_path / "model")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(folder, "model")
    runs_uri = f"runs:/{run.info.run_id}/model"
    version = mlflow.register_model(runs_uri, "facts").version
    MlflowClient().set_registered_model_alias("facts", "champion", version)
    for uri in (runs_uri, f"models:/facts/{version}", "models:/facts@champion"):
        dst = tmp_path / uri.replace(":", "_").replace("/", "_")
        dst.mkdir()
        opened = artifact.open_model(uri, dst_path=str(dst))
        assert opened.conf == CONF and opened.where == uri
        assert os.path.isfile(os.path.join(opened.path, "MLmodel")), uri
        assert artifact.open_model(uri, mlmodel_only=True).conf == CONF


def test_a_client_resolves_models_uris_against_its_own_registry(tracking_uri, tmp_path, monkeypatch):
    folder = _model_folder(tmp_path / "model")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(folder, "model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "facts").version
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    # The global stores now point elsewhere: only the client knows where the version is.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert artifact.open_model(f"models:/facts/{version}", mlmodel_only=True, client=client).conf == CONF
        with pytest.raises(MlflowException):
            artifact.open_model(f"models:/facts/{version}", mlmodel_only=True)
    finally:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)


@pytest.mark.parametrize("mlmodel_only", [False, True])
def test_the_folder_of_an_unfinished_save_is_refused_by_its_name(tmp_path, mlmodel_only):
    # Even with a complete MLmodel: save_model renames MLmodel a moment before the folder.
    leftover = _model_folder(tmp_path / f".model{artifact.PARTIAL_MARK}abc123")
    with pytest.raises(MlflowException, match="is the temporary folder of a save_model that did not finish"):
        artifact.open_model(leftover, mlmodel_only=mlmodel_only)


def test_an_unreadable_mlmodel_gets_the_callers_message(tmp_path):
    folder = _model_folder(tmp_path / "model")
    pathlib.Path(folder, "MLmodel").write_text("flavors: [unclosed")
    with pytest.raises(MlflowException, match=r"(?s)Cannot read the MLmodel file of '.*model': .*Download or copy the model again\.$"):
        artifact.open_model(folder)
    with pytest.raises(MlflowException, match="^custom: "):
        artifact.open_model(folder, unreadable=lambda e: MlflowException(f"custom: {e}"))


def test_another_flavors_model_opens_but_has_no_conf(tmp_path):
    os.makedirs(tmp_path / "other")
    model = Model()
    model.add_flavor("sklearn", pickled_model="model.pkl")
    model.save(str(tmp_path / "other" / "MLmodel"))
    opened = artifact.open_model(str(tmp_path / "other"))
    assert not opened.is_this_flavor
    with pytest.raises(MlflowException, match=r"was not saved by mlflow_eas_savedmodel \(its flavors: \['sklearn'\]\)"):
        opened.conf  # noqa: B018


def test_loading_does_not_import_saving():
    """load.py and artifact_check.py get PARTIAL_MARK from artifact.py, not from save.py."""
    package = pathlib.Path(artifact.__file__).parent
    for name in ("load.py", "artifact_check.py", "artifact.py"):
        tree = ast.parse((package / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "mlflow_eas_savedmodel.save" not in imported, name
