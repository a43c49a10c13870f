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
