"""EAS facts on registered versions: eas.processors, eas.tf_version, eas.check.<processor>, and
``promote --require-check`` gated on them. A real sqlite store and registry; the runtime check
runs the official TF 1.15 wheel (cached environment)."""

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.cli import cli
from mlflow_eas_savedmodel.registry import promote

X = np.random.default_rng(5).random((3, 4), dtype=np.float32)


def _log(model, name, **kwargs):
    with mlflow.start_run():
        return mes.log_model(model, name="model", registered_model_name=name, input_example=X, **kwargs)


def test_a_version_registered_through_the_flavor_carries_its_eas_facts(tracking_uri, mlp, tf):
    info = _log(mlp, "mnist")
    conf = info.flavors[mes.FLAVOR_NAME]
    tags = MlflowClient().get_model_version("mnist", info.registered_model_version).tags
    assert tags["eas.processors"] == ",".join(conf["eas_processors"]) and "tensorflow_cpu_1.15" in tags["eas.processors"]
    assert tags["eas.tf_version"] == tf.__version__
    found = MlflowClient().search_model_versions("tags.`eas.processors` LIKE '%tensorflow_cpu_1.15%'")
    assert [(v.name, str(v.version)) for v in found] == [("mnist", "1")]


def test_promote_tags_a_version_registered_without_the_flavor(tracking_uri, mlp, tf):
    with mlflow.start_run():
        info = mes.log_model(mlp, name="model")
    version = mlflow.register_model(info.model_uri, "plain").version
    assert "eas.processors" not in MlflowClient().get_model_version("plain", version).tags
    promote("plain", version)
    tags = MlflowClient().get_model_version("plain", version).tags
    assert tags["eas.processors"] == ",".join(info.flavors[mes.FLAVOR_NAME]["eas_processors"])
    assert tags["eas.tf_version"] == tf.__version__


def test_require_check_refuses_without_a_passing_check_and_names_the_command(tracking_uri, mlp):
    _log(mlp, "gated")
    with pytest.raises(MlflowException) as refused:
        promote("gated", 1, require_checks=["tensorflow_cpu_1.15", "tensorflow_cpu_2.3"])
    assert str(refused.value.message) == (
        "Refusing to promote version 1 of 'gated': it has no passing runtime check for "
        "['tensorflow_cpu_1.15', 'tensorflow_cpu_2.3']:\n"
        "  - eas.check.tensorflow_cpu_1.15: not set\n  - eas.check.tensorflow_cpu_2.3: not set\n"
        "Run the check, which records the result on the version, then promote again:\n"
        "  mlflow-eas-savedmodel check-runtime -m models:/gated/1 --processor tensorflow_cpu_1.15\n"
        "  mlflow-eas-savedmodel check-runtime -m models:/gated/1 --processor tensorflow_cpu_2.3"
    )
    assert MlflowClient().get_registered_model("gated").aliases == {}
    with pytest.raises(MlflowException, match="Unknown EAS processor 'tensorflow_cpu_9.9'"):
        promote("gated", 1, require_checks=["tensorflow_cpu_9.9"])


@pytest.mark.runtime
def test_check_runtime_records_failed_then_passed_and_promote_follows(tracking_uri, mlp):
    _log(mlp, "checked")
    client = MlflowClient()
    client.set_registered_model_alias("checked", "candidate", "1")
    # 0.1 s cannot start TF 1.15 (about 1 s on an idle machine): a real failed check, the
    # runner is stopped.
    failed = mes.check_runtime("models:/checked@candidate", processor="tensorflow_cpu_1.15", timeout=0.1)
    assert not failed.ok
    value = client.get_model_version("checked", "1").tags["eas.check.tensorflow_cpu_1.15"]
    assert value.startswith("failed: ") and failed.runtimes[0].error.splitlines()[0][:100] in value, value
    assert failed.recorded_on == "models:/checked/1"

    result = CliRunner().invoke(cli, ["promote", "checked", "1", "--require-check", "tensorflow_cpu_1.15",
                                      "--tracking-uri", tracking_uri, "--registry-uri", tracking_uri])
    assert result.exit_code == 1
    assert f"eas.check.tensorflow_cpu_1.15: {value}" in result.output
    assert "mlflow-eas-savedmodel check-runtime -m models:/checked/1 --processor tensorflow_cpu_1.15" in result.output

    result = CliRunner().invoke(cli, ["check-runtime", "-m", "models:/checked@candidate", "--tracking-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    value = client.get_model_version("checked", "1").tags["eas.check.tensorflow_cpu_1.15"]
    diffs = [d for s in mes.check_runtime("models:/checked/1").runtimes[0].signatures
             for d in (s.max_abs_diff, s.c_api_max_abs_diff)]
    assert value == (f"passed: max abs diff {max(diffs):.3g} (TF 1.15.0 wheel, C++ and Python loaders, "
                     "1 SignatureDefs)")
    assert f"Recorded eas.check.tensorflow_cpu_1.15={value!r} on models:/checked/1" in result.output

    result = CliRunner().invoke(cli, ["promote", "checked", "1", "--require-check", "tensorflow_cpu_1.15",
                                      "--tracking-uri", tracking_uri, "--registry-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    assert str(client.get_registered_model("checked").aliases["champion"]) == "1"
