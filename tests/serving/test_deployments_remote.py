"""``mlflow deployments create|update|delete|get|list|predict -t eas`` through Alibaba Cloud's SDKs.

The SDKs (alibabacloud-eas20210701, alibabacloud-oss-v2, alibabacloud-credentials) run for real
against local stand-ins of the EAS OpenAPI and OSS (``tests/support/eas_standins.py``): the requests they
send are checked field by field, and the stand-ins answer in the documented shapes. None of this
has run against a live EAS service.

Opt-in: ``MLFLOW_EAS_SAVEDMODEL_ALIPAI=1 python -m pytest tests/serving/test_deployments_remote.py -k alipai -s``
installs Alibaba's PAI Python SDK (``alipai==0.4.13``, ``--no-deps``, plus what its import needs)
into a fresh venv from the package index, has it deploy the same models against the same stand-in
(``tests/support/alipai_driver.py``) and compares its CreateService body with this package's, field by
field (about 1.5 min on 2 busy cores).
"""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from support.eas_standins import EasStandin, OssStandin
from mlflow.exceptions import MlflowException
from support.servers import mlflow_command, server_env
from support.stores import sqlite_store

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.eas import protocol
from mlflow_eas_savedmodel.eas.endpoint import serve_eas
from support.paths import SUPPORT

REGION = "cn-shanghai"
AK_ID, AK_SECRET = "LTAI5tExampleKeyId", "example-secret"
W1 = (np.arange(6, dtype=np.float32).reshape(3, 2) / 7).astype(np.float32)
X = np.array([[1, 2, 3], [0, -1, 0.5]], np.float32)
ALIPAI = os.environ.get("MLFLOW_EAS_SAVEDMODEL_ALIPAI") == "1"
ALIPAI_VERSION = "0.4.13"
# What alipai's pai.session, pai.model and pai.predictor import (found by importing them in an empty venv
# until nothing was missing; alipai declares 24 dependencies, pyodps among them, that deploying does not use).
ALIPAI_IMPORT_NEEDS = (
    "alibabacloud-tea-openapi<1", "alibabacloud-tea-util<1", "alibabacloud-openapi-util<1",
    "alibabacloud-endpoint-util<1", "alibabacloud-credentials", "alibabacloud-sts20150401", "oss2",
    "semantic-version", "pyyaml", "addict", "tqdm", "pydantic>=2", "numpy<2", "eas-prediction", "requests", "backoff<2",
)


def _log_linear(tf, w, name="demo"):
    import mlflow

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        y = tf.identity(tf.matmul(x, tf.compat.v1.get_variable("w", initializer=w)), name="y")
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            with mlflow.start_run():
                return mes.log_model(sess, name="model", inputs={"x": x}, outputs={"y": y},
                                     input_example={"x": X}, registered_model_name=name)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tf):
    """``demo`` versions 1 and 2 (x @ W, two W), and ``counts`` 1 (DenseBincount: TF >= 2.3 only)."""
    import mlflow

    root = tmp_path_factory.mktemp("deploy_remote")
    with sqlite_store(root, "deploy-remote") as uri:
        _log_linear(tf, W1)
        _log_linear(tf, W1 * 2)
        mlflow.MlflowClient().set_registered_model_alias("demo", "champion", "1")
        g = tf.Graph()
        with g.as_default():
            x = tf.compat.v1.placeholder(tf.int32, [None], name="x")
            y = tf.identity(tf.math.bincount(x, minlength=4, maxlength=4), name="y")
            with tf.compat.v1.Session(graph=g) as sess, mlflow.start_run():
                mes.log_model(sess, name="model", inputs={"x": x}, outputs={"y": y}, registered_model_name="counts")
        yield {"uri": uri, "root": root}


@pytest.fixture
def credentials(monkeypatch, tmp_path):
    """Access keys for the default credential chain; it reads its variables (and $HOME) once, at import."""
    from alibabacloud_credentials.utils import auth_constant, auth_util

    monkeypatch.setattr(auth_constant, "HOME", str(tmp_path))  # no profile files of this machine
    monkeypatch.setattr(auth_util, "environment_access_key_id", AK_ID)
    monkeypatch.setattr(auth_util, "environment_access_key_secret", AK_SECRET)
    monkeypatch.setattr(auth_util, "environment_security_token", None)
    monkeypatch.setattr(auth_util, "environment_ecs_metadata_disabled", "true")
    monkeypatch.setattr(auth_util, "environment_credentials_file", None)


@pytest.fixture
def cloud(monkeypatch):
    with EasStandin(REGION) as eas, OssStandin() as oss:
        # get/list/predict take no -C options: their endpoint comes from the environment.
        monkeypatch.setenv("MLFLOW_EAS_ENDPOINT", eas.url)
        yield eas, oss


def _config(eas, oss, **extra):
    return {"processor": "tensorflow_cpu_1.15", "oss_path": "oss://my-bucket/models/",
            "eas_endpoint": eas.url, "oss_endpoint": oss.url, "poll_interval": "0.01", "gateway_interval": "0.01",
            **extra}


def _client(target=f"eas:/{REGION}"):
    from mlflow.deployments import get_deploy_client

    return get_deploy_client(target)


def _model_files(model_uri):
    import mlflow

    local = mlflow.artifacts.download_artifacts(model_uri)
    root = os.path.join(local, "savedmodel")
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


def test_lifecycle_create_get_list_predict_update_delete(registry, credentials, cloud, capsys, monkeypatch):
    import mlflow

    eas, oss = cloud
    client = _client()
    created = client.create_deployment("mnist_svc", "models:/demo@champion", config=_config(
        eas, oss, instance="2", cpu="4", memory="8000", batching="true", max_batch_size="16",
        warm_up_count="3", token="tok-123"))

    # OSS: the SavedModel files, byte for byte, its manifest and the warm-up request.
    base = "models/mnist_svc/v1/"
    expected = _model_files("models:/demo/1")
    stored = {key: body for (bucket, key), body in oss.objects.items() if bucket == "my-bucket"}
    assert sorted(stored) == sorted([base + "savedmodel/" + rel for rel in expected]
                                    + [base + "savedmodel.sha256", base + "warm_up_serving_default.bin"])
    for rel, body in expected.items():
        assert stored[base + "savedmodel/" + rel] == body
    assert all(f"OSS4-HMAC-SHA256 Credential={AK_ID}/" in r["headers"]["Authorization"] for r in oss.requests)
    assert f"/{REGION}/oss/aliyun_v4_request" in oss.requests[0]["headers"]["Authorization"]
    signature, inputs, output_filter = protocol.decode_request(stored[base + "warm_up_serving_default.bin"])
    assert signature == "serving_default" and output_filter == []
    np.testing.assert_array_equal(inputs["x"], X)

    # EAS: the service JSON of eas-config, the labels, a signed request of API version 2021-07-01.
    (create,) = eas.calls("CreateService")
    assert (create["method"], create["path"]) == ("POST", "/api/v2/services")
    assert create["body"] == {
        "name": "mnist_svc", "processor": "tensorflow_cpu_1.15",
        "model_path": "oss://my-bucket/models/mnist_svc/v1/savedmodel/",
        "warm_up_data_path": "oss://my-bucket/models/mnist_svc/v1/warm_up_serving_default.bin",
        "metadata": {"instance": 2, "cpu": 4, "memory": 8000,
                     "rpc": {"batching": True, "max_batch_size": 16, "warm_up_count_per_file": 3}},
        "token": "tok-123",
    }
    assert json.loads(create["query"]["Labels"]) == {
        "mlflow_model_uri": "models:/demo@champion", "mlflow_model_name": "demo", "mlflow_model_version": "1"}
    assert create["headers"]["x-acs-version"] == "2021-07-01"
    assert f"Credential={AK_ID}," in create["headers"]["Authorization"]
    describes = eas.calls("DescribeService")
    assert len(describes) == 1 + eas.polls_until_running + 1  # exists?, then Creating x2, Running
    assert all(d["path"] == f"/api/v2/services/{REGION}/mnist_svc" for d in describes)

    assert created["status"] == "Running" and created["name"] == "mnist_svc"
    assert created["endpoint"] == f"{eas.url}/api/predict/mnist_svc"
    assert (created["model_name"], created["model_version"], created["processor"]) == ("demo", "1", "tensorflow_cpu_1.15")
    err = capsys.readouterr().err
    assert "Uploading 5 files" in err and "to oss://my-bucket/models/mnist_svc/v1/" in err
    assert "EAS service mnist_svc: Creating (0/2 instances running)" in err
    assert "EAS service mnist_svc: Running (2/2 instances running)" in err
    # then the gateway, as alipai waits for it: GETs of the endpoint with the token until no 503
    gateway = eas.calls("gateway")
    assert [g["method"] for g in gateway] == ["GET"] * (eas.gateway_503s + 1)
    assert {g["path"] for g in gateway} == {"/api/predict/mnist_svc"}
    assert {g["headers"]["Authorization"] for g in gateway} == {"tok-123"}
    assert (f"EAS service mnist_svc: Running, gateway at {eas.url}/api/predict/mnist_svc answers HTTP 503 "
            "'no healthy upstream'; waiting") in err
    assert "EAS service mnist_svc: gateway ready (HTTP 200 '{}')" in err
    assert err.index("gateway ready") > err.index("Running (2/2")

    registry_client = mlflow.MlflowClient()
    tag = json.loads(registry_client.get_model_version("demo", "1").tags["eas.deployment.mnist_svc"])
    assert tag == {"name": "mnist_svc", "region": REGION, "endpoint": created["endpoint"],
                   "intranet_endpoint": created["intranet_endpoint"], "processor": "tensorflow_cpu_1.15",
                   "model_path": "oss://my-bucket/models/mnist_svc/v1/savedmodel/"}
    assert not any("tok-123" in v for v in registry_client.get_model_version("demo", "1").tags.values())

    got = client.get_deployment("mnist_svc")
    assert {k: got[k] for k in ("status", "model_version", "region")} == {"status": "Running", "model_version": "1", "region": REGION}
    assert [d["name"] for d in client.list_deployments()] == ["mnist_svc"]
    assert eas.calls("ListServices")[0]["query"] == {"PageNumber": "1", "PageSize": "100"}

    # predict: EAS's protocol with the service token, answered by a real endpoint of version 1.
    handle_1 = mes.load_model("models:/demo/1", device="cpu")
    with serve_eas("models:/demo/1", "mnist_svc") as backend:
        eas.backends["mnist_svc"] = backend
        result = client.predict("mnist_svc", {"inputs": {"x": X.tolist()}, "params": {"signature_name": "serving_default"}})
        # what `mlflow deployments predict --input-path` does with a JSON file
        frame = pd.read_json(io.StringIO(json.dumps({"x": X.tolist()})))
        from_frame = client.predict("mnist_svc", frame)
        monkeypatch.setenv("EAS_SERVICE_TOKEN", "not-the-token")
        with pytest.raises(MlflowException, match=r"EAS service 'mnist_svc' answered HTTP 401: Authorization failed"):
            client.predict("mnist_svc", {"x": X})
        monkeypatch.delenv("EAS_SERVICE_TOKEN")
    np.testing.assert_allclose(np.float32(result["predictions"]["y"]), handle_1.predict({"x": X})["y"], rtol=1e-6)
    assert from_frame["predictions"] == result["predictions"]
    assert json.loads(from_frame.to_json()) == {"predictions": result["predictions"]}
    predicts = eas.calls("predict")
    assert predicts[0]["headers"]["Authorization"] == "tok-123"
    assert predicts[-1]["headers"]["Authorization"] == "not-the-token"
    assert protocol.decode_request(predicts[0]["body"])[1]["x"].dtype == np.float32  # the signature's dtype

    # update: version 2 uploaded beside version 1, the service rolled, labels and tags moved.
    updated = client.update_deployment("mnist_svc", "models:/demo/2", config=_config(eas, oss))
    (update,) = eas.calls("UpdateService")
    assert (update["method"], update["path"]) == ("PUT", f"/api/v2/services/{REGION}/mnist_svc")
    assert update["body"]["model_path"] == "oss://my-bucket/models/mnist_svc/v2/savedmodel/"
    assert update["body"]["metadata"] == {"instance": 1, "cpu": 2, "memory": 4000}
    (label,) = eas.calls("UpdateServiceLabel")
    assert label["path"] == f"/api/v2/services/{REGION}/mnist_svc/label"
    assert label["body"] == {"Labels": {"mlflow_model_uri": "models:/demo/2", "mlflow_model_name": "demo", "mlflow_model_version": "2"}}
    assert ("my-bucket", "models/mnist_svc/v2/savedmodel/saved_model.pb") in oss.objects
    assert updated["status"] == "Running" and updated["model_version"] == "2"
    assert "EAS service mnist_svc: Updating" in capsys.readouterr().err
    assert "eas.deployment.mnist_svc" not in registry_client.get_model_version("demo", "1").tags
    assert "eas.deployment.mnist_svc" in registry_client.get_model_version("demo", "2").tags

    # update without -m: the model the service runs (its label), with new options.
    client.update_deployment("mnist_svc", config=_config(eas, oss, instance="3"))
    assert eas.calls("UpdateService")[-1]["body"]["metadata"]["instance"] == 3
    assert eas.calls("UpdateService")[-1]["body"]["model_path"] == "oss://my-bucket/models/mnist_svc/v2/savedmodel/"

    # delete: gone from EAS and from the version's tags; deleting again is no error.
    assert client.delete_deployment("mnist_svc") is None
    (delete,) = eas.calls("DeleteService")
    assert (delete["method"], delete["path"]) == ("DELETE", f"/api/v2/services/{REGION}/mnist_svc")
    assert "eas.deployment.mnist_svc" not in registry_client.get_model_version("demo", "2").tags
    with pytest.raises(MlflowException, match=f"No EAS service 'mnist_svc' in {REGION}"):
        client.get_deployment("mnist_svc")
    client.delete_deployment("mnist_svc")
    assert len(eas.calls("DeleteService")) == 1


def _refused(client, eas, oss, match, model_uri="models:/demo/1", name="svc", **config):
    with pytest.raises(MlflowException, match=match):
        client.create_deployment(name, model_uri, config=_config(eas, oss, **config))
    assert not oss.requests and not eas.calls("CreateService")  # refused before any upload


def test_refused_preconditions_name_the_fix(registry, credentials, cloud, monkeypatch):
    import mlflow

    eas, oss = cloud
    client = _client()
    _refused(client, eas, oss, r"The model 'models:/counts/1' is not compatible with EAS processor "
             r"'tensorflow_cpu_1.15' \(.*DenseBincount.*\)\. Use one of: tensorflow_cpu_2.3, tensorflow_cpu_2.4",
             model_uri="models:/counts/1")
    no_check = (r"Model 'demo' version 1 has no passing runtime check for tensorflow_cpu_1.15 \(tag "
                r"eas.check.tensorflow_cpu_1.15 is {}\)\. Run `mlflow-eas-savedmodel check-runtime "
                r"models:/demo/1 --processor tensorflow_cpu_1.15`, or leave out -C require_check=true")
    _refused(client, eas, oss, no_check.format("None"), require_check="true")
    mlflow.MlflowClient().set_model_version_tag("demo", "1", "eas.check.tensorflow_cpu_1.15", "failed: C++ loader")
    _refused(client, eas, oss, no_check.format("'failed: C\\+\\+ loader'"), require_check="true")
    _refused(client, eas, oss, r"-C require_check=true needs a registered model version",
             model_uri=f"runs:/{mlflow.MlflowClient().get_model_version('demo', '1').run_id}/model", require_check="true")
    _refused(client, eas, oss, r"-C oss_path='s3://b/x' must be oss://<bucket>/<prefix>/", oss_path="s3://b/x")
    _refused(client, eas, oss, r"Unknown -C option\(s\) \['cpus'\] for the eas target", cpus="2")
    _refused(client, eas, oss, r"-C batching='maybe' must be true or false", batching="maybe")
    _refused(client, eas, oss, r"Service name 'Bad-Name' is not valid on EAS", name="Bad-Name")
    with pytest.raises(MlflowException, match="deploys the eas_savedmodel flavor only"):
        client.create_deployment("svc", "models:/demo/1", flavor="tensorflow", config=_config(eas, oss))

    monkeypatch.delenv("ALIBABA_CLOUD_REGION_ID", raising=False)
    _refused(_client("eas"), eas, oss, r"No Alibaba Cloud region: pass -C region=cn-shanghai, use the target "
             r"eas:/cn-shanghai, or set \$ALIBABA_CLOUD_REGION_ID")
    monkeypatch.setenv("ALIBABA_CLOUD_REGION_ID", REGION)
    assert _client("eas").get_deployment.__self__._options(None)["region"] == REGION

    from alibabacloud_credentials.utils import auth_util

    monkeypatch.setattr(auth_util, "environment_access_key_id", None)
    monkeypatch.setattr(auth_util, "environment_access_key_secret", None)
    _refused(client, eas, oss, r"No Alibaba Cloud credentials found\. Set ALIBABA_CLOUD_ACCESS_KEY_ID and "
             r"ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    assert not eas.requests


def test_unreachable_openapi_names_the_endpoint(credentials, monkeypatch):
    from support.servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_EAS_ENDPOINT", url)
    with pytest.raises(MlflowException, match=f"EAS DescribeService: cannot reach the EAS OpenAPI at {url} "):
        _client().get_deployment("svc")


def test_passing_check_existing_service_failure_and_timeout(registry, credentials, cloud):
    import mlflow

    eas, oss = cloud
    client = _client()
    mlflow.MlflowClient().set_model_version_tag("demo", "2", "eas.check.tensorflow_cpu_1.15", "passed 2026-12-01")
    created = client.create_deployment("checked", "models:/demo/2", config=_config(eas, oss, require_check="true", warm_up="false"))
    assert created["status"] == "Running"
    assert "warm_up_data_path" not in eas.calls("CreateService")[0]["body"]
    # A model outside the registry lands under a hash of all its files.
    run_uri = f"runs:/{mlflow.MlflowClient().get_model_version('demo', '2').run_id}/model"
    from_run = client.create_deployment("from_run", run_uri, config=_config(eas, oss))
    assert re.fullmatch(r"oss://my-bucket/models/from_run/sha-[0-9a-f]{12}/savedmodel/", from_run["model_path"])
    assert (from_run["model_uri"], from_run["model_version"]) == (run_uri, None)
    with pytest.raises(MlflowException, match=r"EAS service 'checked' already exists in cn-shanghai\. Roll it to this "
                       r"model with `mlflow deployments update -t eas --name checked -m models:/demo/2`"):
        client.create_deployment("checked", "models:/demo/2", config=_config(eas, oss))
    with pytest.raises(MlflowException, match=r"No EAS service 'other' in cn-shanghai to update"):
        client.update_deployment("other", "models:/demo/2", config=_config(eas, oss))

    with pytest.raises(MlflowException, match=r"Uploading .*saved_model.pb to oss://no-such-bucket/x/nobucket/v2/"
                       r"savedmodel/saved_model.pb failed: .*NoSuchBucket.*Check that bucket 'no-such-bucket' exists "
                       r"in cn-shanghai and that the credentials may write to it"):
        client.create_deployment("nobucket", "models:/demo/2", config=_config(eas, oss, oss_path="oss://no-such-bucket/x/"))
    assert "nobucket" not in eas.services

    eas.fail_with = "Load model failed: no MetaGraphDef"
    with pytest.raises(MlflowException, match=r"EAS service 'failing' is Failed: Load model failed: no MetaGraphDef ModelLoadFailed"):
        client.create_deployment("failing", "models:/demo/2", config=_config(eas, oss))
    eas.fail_with, eas.polls_until_running = None, 10**9
    with pytest.raises(MlflowException, match=r"EAS service 'slow' is still Creating after 0.5 s \(last message: 'Service "
                       r"is now creating'\)\. It keeps starting on EAS: follow it with `mlflow deployments get -t eas "
                       r"--name slow`, or wait longer with -C timeout="):
        client.create_deployment("slow", "models:/demo/2", config=_config(eas, oss, timeout="0.5", poll_interval="0.05"))


def test_mlflow_cli_create(registry, cloud, tmp_path):
    """The real CLI in its own process: entry point, -C parsing, credentials from the environment."""
    eas, oss = cloud
    env = server_env(MLFLOW_TRACKING_URI=registry["uri"], MLFLOW_REGISTRY_URI=registry["uri"], HOME=str(tmp_path),
                     ALIBABA_CLOUD_ECS_METADATA_DISABLED="true", ALIBABA_CLOUD_ACCESS_KEY_ID=AK_ID,
                     ALIBABA_CLOUD_ACCESS_KEY_SECRET=AK_SECRET)
    args = ["deployments", "create", "-t", f"eas:/{REGION}", "--name", "cli_svc", "-m", "models:/demo/1"]
    for key, value in _config(eas, oss).items():
        args += ["-C", f"{key}={value}"]
    done = subprocess.run(mlflow_command(*args), capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "eas_savedmodel deployment cli_svc is created" in done.stdout
    assert "EAS service cli_svc: Running (1/1 instances running)" in done.stderr
    assert eas.services["cli_svc"]["config"]["model_path"] == "oss://my-bucket/models/cli_svc/v1/savedmodel/"
    assert f"Credential={AK_ID}," in eas.calls("CreateService")[0]["headers"]["Authorization"]


def test_gpu_instance_type_and_resource_group_fields(registry, credentials, cloud):
    """The fields alipai 0.4.13's ``_build_service_config`` writes: ResourceConfig -> metadata.cpu/
    memory/gpu/gpu_memory, resource_id -> metadata.resource, instance_type ->
    cloud.computing.instance_type in place of cpu and memory."""
    eas, oss = cloud
    client = _client()
    gpu = {"processor": "tensorflow_gpu_1.15", "warm_up": "false"}
    client.create_deployment("in_group", "models:/demo/1", config=_config(
        eas, oss, **gpu, gpu="1", resource_group="eas-r-gpu123", cpu="8", memory="16000"))
    client.create_deployment("by_type", "models:/demo/1", config=_config(
        eas, oss, **gpu, instance_type="ecs.gn6i-c4g1.xlarge", instance="2"))
    client.create_deployment("shared", "models:/demo/1", config=_config(
        eas, oss, **gpu, gpu_memory="4", resource_group="eas-r-gpu123"))
    group, by_type, shared = (c["body"] for c in eas.calls("CreateService"))
    assert group["processor"] == "tensorflow_gpu_1.15"
    assert group["metadata"] == {"instance": 1, "cpu": 8, "memory": 16000, "gpu": 1, "resource": "eas-r-gpu123"}
    assert "cloud" not in group
    assert by_type["metadata"] == {"instance": 2}
    assert by_type["cloud"] == {"computing": {"instance_type": "ecs.gn6i-c4g1.xlarge"}}
    assert shared["metadata"] == {"instance": 1, "cpu": 2, "memory": 4000, "gpu_memory": 4, "resource": "eas-r-gpu123"}
    # update sends them too; -C gpu states that an instance type outside the known GPU families has GPUs
    client.update_deployment("by_type", config=_config(eas, oss, **gpu, instance_type="ecs.newgpu9.xlarge", gpu="1"))
    update = eas.calls("UpdateService")[-1]["body"]
    assert (update["cloud"], update["metadata"]) == ({"computing": {"instance_type": "ecs.newgpu9.xlarge"}},
                                                     {"instance": 1, "gpu": 1})


def test_gpu_and_resource_refusals_name_the_fix(registry, credentials, cloud):
    from mlflow_eas_savedmodel.deployments.options import is_gpu_instance_type, options_help

    eas, oss = cloud
    client = _client()
    gpu = "tensorflow_gpu_1.15"
    _refused(client, eas, oss, r"Processor tensorflow_gpu_1.15 runs on a GPU, but no -C gpu and no -C instance_type "
             r"were given\. Either pass -C instance_type=ecs.gn6i-c4g1.xlarge \(a GPU instance type\), or -C gpu=1 "
             r"-C resource_group=<eas-r-\.\.\. id> for a dedicated resource group with GPU machines, or deploy on CPU "
             r"with -C processor=tensorflow_cpu_1.15\.$", processor=gpu)
    _refused(client, eas, oss, r"Processor tensorflow_gpu_1.15 runs on a GPU, but -C instance_type=ecs.c6.xlarge is "
             r"not of a GPU family \(gn\*, ebmgn\*, vgn\*, sgn\*\)\. Either pass a GPU instance type such as -C "
             r"instance_type=ecs.gn6i-c4g1.xlarge, add -C gpu=1 if this type does have a GPU, or deploy on CPU with "
             r"-C processor=tensorflow_cpu_1.15\.$", processor=gpu, instance_type="ecs.c6.xlarge")
    _refused(client, eas, oss, r"-C instance_type=ecs.c6.xlarge fixes each instance's resources; leave out -C cpu "
             r"-C memory \(or drop -C instance_type and size the instances with -C cpu/memory\)\.$",
             instance_type="ecs.c6.xlarge", cpu="4", memory="8000")
    _refused(client, eas, oss, r"-C gpu=1 needs a dedicated resource group with GPU machines: EAS's public resource "
             r"group takes GPUs only through an instance type\. Add -C resource_group=<eas-r-\.\.\. id>, or use -C "
             r"instance_type=ecs.gn6i-c4g1.xlarge \(a GPU instance type\) instead\.$", processor=gpu, gpu="1")
    _refused(client, eas, oss, r"-C gpu_memory=4 does not take effect with -C gpu=1: each instance gets whole GPUs\. "
             r"Leave out -C gpu_memory, or leave out -C gpu to share GPUs with -C gpu_memory=4 GB per instance\.$",
             processor=gpu, gpu="1", gpu_memory="4", resource_group="eas-r-gpu123")
    _refused(client, eas, oss, r"-C gpu='0' must be a positive integer, e.g. -C gpu=1\.$", gpu="0")
    _refused(client, eas, oss, r"-C max_batch_size=16 only applies with server-side batching: add -C batching=true\.$",
             max_batch_size="16")
    _refused(client, eas, oss, r"-C gateway_timeout='-1' must be a non-negative number, e.g. -C gateway_timeout=120.0\.$",
             gateway_timeout="-1")
    assert not eas.requests
    assert all(is_gpu_instance_type(t) for t in ("ecs.gn6i-c4g1.xlarge", "ecs.gn7i-c8g1.2xlarge",
                                                 "ecs.ebmgn7e.32xlarge", "ecs.vgn6i-m4.xlarge", "ecs.sgn7i-vws-m2.xlarge"))
    assert not any(is_gpu_instance_type(t) for t in ("ecs.c6.xlarge", "ecs.g6.large", "ecs.r7.2xlarge",
                                                     "ml.gu7i.c16m60.1-gu30", "gn6i", ""))
    help_text = " ".join(options_help().split())
    for field in ("metadata.gpu.", "metadata.gpu_memory.", "cloud.computing.instance_type.", "metadata.resource."):
        assert f"Sent as {field}" in help_text


def test_default_openapi_host_is_pai_eas_in_every_region(credentials):
    """alipai's ClientFactory.get_endpoint: pai-eas.<region>.aliyuncs.com everywhere, also where the EAS SDK's
    own map has no entry (it would dial eas.<region>.aliyuncs.com there)."""
    from mlflow_eas_savedmodel.deployments import target_help
    from mlflow_eas_savedmodel.deployments.cloud import EasServices, default_credentials

    chain = default_credentials()
    for region in ("cn-shanghai", "cn-wulanchabu", "ap-northeast-1", "me-central-1"):
        services = EasServices(region, chain)
        assert services.client._endpoint == f"pai-eas.{region}.aliyuncs.com"  # the host the SDK signs and dials
        assert services.endpoint == f"pai-eas.{region}.aliyuncs.com"  # what errors name
    assert EasServices("cn-wulanchabu", chain, endpoint="http://127.0.0.1:9").client._endpoint == "127.0.0.1:9"
    text = " ".join(target_help().split())
    assert "inside a VPC pai-eas-manage-vpc.<region>.aliyuncs.com" in text and "pai-eas-vpc." not in text


def test_gateway_wait_times_out_naming_status_and_message(registry, credentials, cloud, capsys):
    import mlflow
    from support.servers import free_port

    eas, oss = cloud
    client = _client()
    eas.gateway_503s = 10**9
    with pytest.raises(MlflowException, match=r"^The endpoint http://127\.0\.0\.1:\d+/api/predict/lagging of EAS service "
                       r"'lagging' still answers HTTP 503 'no healthy upstream' after 0\.3 s: EAS's gateway has no healthy "
                       r"instance to route to \(service status Running, message 'Service is Running'\)\. Follow it with "
                       r"`mlflow deployments get -t eas --name lagging` or in the EAS console, or wait longer with -C "
                       r"gateway_timeout=<seconds>\.$"):
        client.create_deployment("lagging", "models:/demo/1", config=_config(
            eas, oss, warm_up="false", gateway_timeout="0.3", gateway_interval="0.05"))
    assert 2 <= len(eas.calls("gateway")) <= 8
    # The service runs on EAS: its model-version tag is written before the gateway wait.
    assert "eas.deployment.lagging" in mlflow.MlflowClient().get_model_version("demo", "1").tags
    assert capsys.readouterr().err.count("answers HTTP 503 'no healthy upstream'; waiting") == 1  # once per change

    created = len(eas.calls("gateway"))
    client.create_deployment("no_wait", "models:/demo/1", config=_config(eas, oss, warm_up="false", gateway_timeout="0"))
    assert len(eas.calls("gateway")) == created  # -C gateway_timeout=0: no GET

    # An endpoint this machine cannot reach (say, only from inside the VPC): 3 tries, then no wait, as alipai.
    eas.gateway_url = f"http://127.0.0.1:{free_port()}"
    unreachable = client.create_deployment("vpc_only", "models:/demo/1", config=_config(eas, oss, warm_up="false"))
    assert unreachable["status"] == "Running"
    err = capsys.readouterr().err
    assert (f"EAS service vpc_only: cannot reach its endpoint {eas.gateway_url}/api/predict/vpc_only from here (3 "
            "tries); not waiting for the gateway (inside the service's VPC use -C endpoint_type=intranet)") in err


@pytest.fixture(scope="module")
def alipai_python(tmp_path_factory):
    """A fresh venv's python holding ``alipai==0.4.13`` (``--no-deps``) and ``ALIPAI_IMPORT_NEEDS`` only."""
    venv = tmp_path_factory.mktemp("alipai") / "venv"
    python = venv / "bin" / "python"
    uv = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
    if uv:
        steps = [[uv, "venv", "-q", "-p", sys.executable, str(venv)],
                 [uv, "pip", "install", "-q", "--python", str(python), "--no-deps", f"alipai=={ALIPAI_VERSION}"],
                 [uv, "pip", "install", "-q", "--python", str(python), *ALIPAI_IMPORT_NEEDS]]
    else:
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", "-q", "--no-deps", f"alipai=={ALIPAI_VERSION}"],
                 [str(python), "-m", "pip", "install", "-q", *ALIPAI_IMPORT_NEEDS]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{step}: {done.stderr[-3000:]}"
    return str(python)


def _flatten(tree, prefix=""):
    """``{"metadata.rpc.batching": True, ...}`` of a service description."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}." if isinstance(value, dict) else prefix + key))
    return flat


# (name, this package's -C options, alipai's Model.deploy arguments, alipai's InferenceSpec.add_option options)
ALIPAI_CASES = [
    ("cpu_public", {}, {"instance_count": 1, "resource_config": {"cpu": 2, "memory": 4000}}, {}),
    ("gpu_group", {"processor": "tensorflow_gpu_1.15", "instance": "2", "cpu": "8", "memory": "16000", "gpu": "1",
                   "resource_group": "eas-r-gpu123", "batching": "true", "max_batch_size": "16",
                   "warm_up_count": "3", "token": "tok-123"},
     {"instance_count": 2, "resource_config": {"cpu": 8, "memory": 16000, "gpu": 1}, "resource_id": "eas-r-gpu123"},
     {"metadata.rpc.batching": True, "metadata.rpc.max_batch_size": 16, "metadata.rpc.warm_up_count_per_file": 3,
      "token": "tok-123"}),
    ("gpu_type", {"processor": "tensorflow_gpu_1.15", "instance_type": "ecs.gn6i-c4g1.xlarge"},
     {"instance_count": 1, "instance_type": "ecs.gn6i-c4g1.xlarge"}, {}),
    ("gpu_shared", {"processor": "tensorflow_gpu_1.15", "gpu_memory": "4", "resource_group": "eas-r-gpu123"},
     {"instance_count": 1, "resource_config": {"cpu": 2, "memory": 4000, "gpu_memory": 4},
      "resource_id": "eas-r-gpu123"}, {}),
]


@pytest.mark.skipif(not ALIPAI, reason="opt-in: MLFLOW_EAS_SAVEDMODEL_ALIPAI=1 (installs alipai 0.4.13 from the "
                                       "package index into a fresh venv)")
def test_create_service_body_matches_alipai(registry, credentials, cloud, alipai_python):
    """The same deployments by this package and by alipai, against the same recording stand-in: the
    CreateService body field by field, its path, labels and API version, the gateway GETs after Running,
    and the OpenAPI hosts alipai would dial."""
    from mlflow_eas_savedmodel.deployments.options import DEFAULT_EAS_HOST, VPC_EAS_HOST

    eas, oss = cloud
    client = _client()
    driver = str(SUPPORT / "alipai_driver.py")
    report = []
    for name, options, deploy, spec_options in ALIPAI_CASES:
        client.create_deployment(name, "models:/demo/1", config=_config(eas, oss, **options))
        ours = eas.calls("CreateService")[-1]
        our_gets = [(g["method"], g["path"], g["headers"].get("Authorization")) for g in eas.calls("gateway")
                    if g["path"] == f"/api/predict/{name}"]
        our_token = eas.services[name]["token"]
        del eas.services[name]  # alipai creates the same service again, from the same uploaded files
        spec = {
            "eas_host": eas.url.split("://", 1)[1], "region": REGION, "access_key_id": AK_ID,
            "access_key_secret": AK_SECRET, "service_name": name, "model_data": ours["body"]["model_path"],
            "processor": ours["body"]["processor"],
            "spec_options": {"warm_up_data_path": ours["body"]["warm_up_data_path"], **spec_options},
            "deploy": {**deploy, "labels": json.loads(ours["query"]["Labels"])},
        }
        done = subprocess.run([alipai_python, driver, json.dumps(spec)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        theirs = eas.calls("CreateService")[-1]
        assert theirs is not ours and result["status"] == "Running"
        their_gets = [(g["method"], g["path"], g["headers"].get("Authorization")) for g in eas.calls("gateway")
                      if g["path"] == f"/api/predict/{name}"][len(our_gets):]

        flat_ours, flat_theirs = _flatten(ours["body"]), _flatten(theirs["body"])
        for field in sorted(set(flat_ours) | set(flat_theirs)):
            same = flat_ours.get(field, "<absent>") == flat_theirs.get(field, "<absent>")
            report.append(f"{name:11} {field:40} {'same' if same else 'DIFFERS'}  ours={flat_ours.get(field, '<absent>')!r}"
                          f" alipai={flat_theirs.get(field, '<absent>')!r}")
        typed = lambda flat: {k: (type(v).__name__, v) for k, v in flat.items()}  # noqa: E731 - True is not 1 in JSON
        assert typed(flat_ours) == typed(flat_theirs), "\n".join(r for r in report if "DIFFERS" in r)
        assert (theirs["method"], theirs["path"]) == (ours["method"], ours["path"]) == ("POST", "/api/v2/services")
        assert json.loads(theirs["query"]["Labels"]) == json.loads(ours["query"]["Labels"])
        assert theirs["headers"]["x-acs-version"] == ours["headers"]["x-acs-version"] == "2021-07-01"
        # Both GET the endpoint with their service's token until the gateway stops answering 503.
        tries = eas.gateway_503s + 1
        assert our_gets == [("GET", f"/api/predict/{name}", our_token)] * tries
        assert their_gets == [("GET", f"/api/predict/{name}", eas.services[name]["token"])] * tries
        assert result["would_dial"] == {"public": DEFAULT_EAS_HOST.format(region=REGION),
                                        "vpc": VPC_EAS_HOST.format(region=REGION)}
    print("\n".join(["", f"CreateService body, mlflow-eas-savedmodel vs alipai {ALIPAI_VERSION}:", *report]))
