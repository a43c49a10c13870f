"""One pre-load check at every entry point (``mlflow_eas_savedmodel.artifact_check``).

One tampered artifact (its ``saved_model.pb`` swapped for a graph whose output depends on a
``WriteFile`` of a marker file, its hashes rewritten to match, as whoever swapped it would) is
handed to every entry point: ``load_model``, ``mlflow.pyfunc.load_model``, a real ``mlflow
models serve``, the CLI's ``serve``, ``serve-eas``, ``export`` and ``check-runtime``, ``mlflow
deployments run-local -t eas`` and ``mlflow deployments create -t eas`` (against the EAS/OSS
stand-ins). Each refuses with the same message, the marker is never written and nothing is
uploaded. An MLmodel pointing an output at a tensor behind a hidden ``Save`` is refused at
load (nothing written); TensorFlow's own load errors are ``MlflowException``s.
"""

import os
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pytest
from support.eas_standins import EasStandin, OssStandin
from mlflow.exceptions import MlflowException
from support.servers import free_port, mlflow_command, server_env
from support.mlmodel import read_mlmodel, write_mlmodel

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import integrity
from mlflow_eas_savedmodel.eas.package import write_eas_package

SCRIPT = os.path.join(os.path.dirname(sys.executable), "mlflow-eas-savedmodel")
X = np.array([[1.0, 2.0]], np.float32)
AK_ID, AK_SECRET = "LTAI5tExampleKeyId", "example-secret"


def _builder_save(tf, export_dir, make):
    """A TF1 Builder SavedModel, ``serving_default``: x float32 [None, 2] -> ``make(tf, x)``."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.array([[2.0], [3.0]], np.float32))
        outputs = make(tf, x, w)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, outputs)
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()
    return str(export_dir)


def _edit_flavor(model, edit):
    doc = read_mlmodel(model)
    edit(doc["flavors"]["eas_savedmodel"])
    write_mlmodel(model, doc)


def _swap_graph(model, hostile_dir):
    """Puts ``hostile_dir`` in place of the artifact's SavedModel and rewrites the hashes."""
    saved_model_dir = model / "savedmodel"
    shutil.rmtree(saved_model_dir)
    shutil.copytree(hostile_dir, saved_model_dir)
    _edit_flavor(model, lambda conf: conf.update(file_sha256=integrity.hash_tree(saved_model_dir)))


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tf):
    root = tmp_path_factory.mktemp("entry_points")
    source = _builder_save(tf, root / "source", lambda tf, x, w: {"y": tf.matmul(x, w, name="y")})
    mes.save_model(source, root / "clean", input_example={"x": X})
    return root / "clean"


@pytest.fixture
def tampered(clean, tmp_path, tf):
    """``(model folder, marker)``: the clean model with a graph that writes ``marker`` per request."""
    marker = tmp_path / "marker-written"

    def hostile(tf, x, w):
        drop = tf.io.write_file(str(marker), "pwned", name="drop")
        with tf.control_dependencies([drop]):
            return {"y": tf.identity(tf.matmul(x, w), name="y")}

    model = tmp_path / "tampered"
    shutil.copytree(clean, model)
    _swap_graph(model, _builder_save(tf, tmp_path / "hostile", hostile))
    return model, marker


def _message(call):
    with pytest.raises(MlflowException) as info:
        call()
    return info.value.message


def _error_line_message(output):
    """The message of the one ``Error: ...`` a CLI printed (it may span lines: the findings)."""
    starts = [i for i, line in enumerate(output.splitlines()) if line.startswith("Error: ")]
    assert len(starts) == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    return "\n".join(output.splitlines()[starts[0]:])[len("Error: "):].strip()


@pytest.fixture
def credentials(monkeypatch, tmp_path):
    """Access keys for Alibaba Cloud's default credential chain (read once, at its import)."""
    from alibabacloud_credentials.utils import auth_constant, auth_util

    monkeypatch.setattr(auth_constant, "HOME", str(tmp_path))
    monkeypatch.setattr(auth_util, "environment_access_key_id", AK_ID)
    monkeypatch.setattr(auth_util, "environment_access_key_secret", AK_SECRET)
    monkeypatch.setattr(auth_util, "environment_security_token", None)
    monkeypatch.setattr(auth_util, "environment_ecs_metadata_disabled", "true")
    monkeypatch.setattr(auth_util, "environment_credentials_file", None)


def _cli_message(result):
    """The message of a click command's refusal: our CLI's ``Error:`` line, MLflow's exception."""
    if isinstance(result.exception, MlflowException):
        return result.exception.message  # MLflow's own CLI (deployments) lets it propagate
    assert result.exit_code == 1, (result.output, result.exception)
    return _error_line_message(result.output)


def test_every_entry_point_refuses_the_tampered_artifact_with_one_message(tampered, tmp_path, credentials):
    """Each entry point as its code runs it, in this process (click's runner for the CLIs);
    the same as real processes: ``test_every_entry_point_process_refuses`` (opt-in)."""
    from click.testing import CliRunner
    from mlflow.deployments import get_deploy_client
    from mlflow.deployments.cli import commands as mlflow_deployments_cli

    from mlflow_eas_savedmodel.cli import cli
    from mlflow_eas_savedmodel.deployments import run_local
    from mlflow_eas_savedmodel.eas.runtime_check import check_runtime

    model, marker = tampered
    uri = str(model)
    expected = _message(lambda: mes.load_model(uri, device="cpu"))
    assert expected.startswith(f"The SavedModel of the model at {uri!r} contains ops"), expected
    assert "it was not loaded" in expected and "'drop' (WriteFile" in expected, expected
    messages = {
        "pyfunc": _message(lambda: mlflow.pyfunc.load_model(uri)),
        "export API": _message(lambda: write_eas_package(uri, tmp_path / "exported")),
        "check_runtime API": _message(lambda: check_runtime(uri, "tensorflow_cpu_1.15")),
        "run_local API": _message(lambda: run_local(
            "svc", uri, config={"processor": "tensorflow_cpu_1.15", "port": str(free_port())})),
    }
    runner = CliRunner()
    for name, args in {
        "serve": ["serve", uri, "-p", str(free_port())],
        "serve-eas": ["serve-eas", uri, "--name", "svc", "-p", "0"],
        "export": ["export", uri, str(tmp_path / "exported")],
        "check-runtime": ["check-runtime", uri, "--processor", "tensorflow_cpu_1.15"],
    }.items():
        messages[name] = _cli_message(runner.invoke(cli, args))
    messages["mlflow deployments run-local"] = _cli_message(runner.invoke(mlflow_deployments_cli, [
        "run-local", "-t", "eas", "--name", "svc", "-m", uri, "-C", "processor=tensorflow_cpu_1.15",
        "-C", f"port={free_port()}"]))
    with EasStandin("cn-shanghai") as eas, OssStandin() as oss:
        config = {"processor": "tensorflow_cpu_1.15", "oss_path": "oss://my-bucket/models/",
                  "eas_endpoint": eas.url, "oss_endpoint": oss.url, "poll_interval": "0.01"}
        client = get_deploy_client("eas:/cn-shanghai")
        messages["deployments create"] = _message(lambda: client.create_deployment("svc", uri, config=config))
        eas.services["svc"] = {  # a running service to update
            "id": "svc0", "config": {"metadata": {"instance": 1}}, "status": "Running", "polls": 0,
            "labels": {}, "token": "t", "current_version": 1, "latest_version": 1, "message": "",
            "reason": ""}
        messages["deployments update"] = _message(lambda: client.update_deployment("svc", uri, config=config))
        assert not oss.requests and not eas.calls("CreateService") and not eas.calls("UpdateService")
    assert {name: m for name, m in messages.items() if m != expected} == {}
    assert not marker.exists()
    assert not (tmp_path / "exported").exists()


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MLFLOW_EAS_SAVEDMODEL_PROCESSES") != "1",
                    reason="real processes of every entry point (~3 min on 2 busy cores): "
                           "MLFLOW_EAS_SAVEDMODEL_PROCESSES=1")
def test_every_entry_point_process_refuses(clean, tampered, tmp_path, tracking_uri):
    model, marker = tampered
    uri = str(model)
    expected = _message(lambda: mes.load_model(uri, device="cpu"))
    env = server_env(MLFLOW_TRACKING_URI=tracking_uri, HOME=str(tmp_path),
                     ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
                     ALIBABA_CLOUD_ACCESS_KEY_ID=AK_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET=AK_SECRET)
    with EasStandin("cn-shanghai") as eas, OssStandin() as oss:
        commands = {
            "mlflow models serve": mlflow_command(
                "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1",
                "-p", str(free_port())),
            "serve": [SCRIPT, "serve", uri, "-p", str(free_port())],
            "serve-eas": [SCRIPT, "serve-eas", uri, "--name", "svc", "-p", "0"],
            "export": [SCRIPT, "export", uri, str(tmp_path / "exported")],
            "check-runtime": [SCRIPT, "check-runtime", uri, "--processor", "tensorflow_cpu_1.15"],
            # Damage the check lets through (hashes off): TensorFlow's error as one Error: line.
            "serve-eas damaged": ["env", "MLFLOW_EAS_SAVEDMODEL_VERIFY=0", SCRIPT, "serve-eas",
                                  str(_truncated_copy(clean, tmp_path / "truncated")), "--name", "svc", "-p", "0"],
            "run-local": mlflow_command(
                "deployments", "run-local", "-t", "eas", "--name", "svc", "-m", uri,
                "-C", "processor=tensorflow_cpu_1.15", "-C", f"port={free_port()}"),
            "deployments create": mlflow_command(
                "deployments", "create", "-t", "eas:/cn-shanghai", "--name", "svc", "-m", uri,
                "-C", "processor=tensorflow_cpu_1.15", "-C", "oss_path=oss://my-bucket/models/",
                "-C", f"eas_endpoint={eas.url}", "-C", f"oss_endpoint={oss.url}"),
        }
        # All at once: each is a fresh Python importing MLflow and TensorFlow.
        running = {
            name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=env, cwd=tmp_path, start_new_session=True)
            for name, argv in commands.items()
        }
        outputs = {}
        try:
            for name, process in running.items():
                outputs[name] = process.communicate(timeout=400)[0]
        finally:
            for process in running.values():
                if process.poll() is None:
                    os.killpg(process.pid, 9)
                    process.wait()
        assert not oss.requests and not eas.calls("CreateService")  # refused before any upload
    for name, process in running.items():
        assert process.returncode != 0, (name, outputs[name][-3000:])
        if name == "serve-eas damaged":
            message = _error_line_message(outputs[name])
            assert message.startswith("TensorFlow cannot load the SavedModel at "), message
        elif name.startswith(("mlflow ", "run-local", "deployments")):
            # MLflow's own CLIs and server print the MlflowException with its traceback.
            assert expected in outputs[name], (name, outputs[name][-3000:])
        else:
            assert _error_line_message(outputs[name]) == expected, (name, outputs[name][-3000:])
    assert not marker.exists()
    assert not (tmp_path / "exported").exists()


def test_stale_hashes_are_refused_before_the_graph_is_read(tampered, tmp_path):
    model, marker = tampered
    _edit_flavor(model, lambda conf: conf["file_sha256"].update({"saved_model.pb": "0" * 64}))
    for load in (lambda: mes.load_model(str(model), device="cpu"), lambda: mlflow.pyfunc.load_model(str(model)),
                 lambda: write_eas_package(str(model), tmp_path / "package")):
        assert "does not match the SHA-256 hashes recorded" in _message(load)
    assert not marker.exists() and not (tmp_path / "package").exists()


def test_mlmodel_cannot_point_an_output_behind_a_hidden_save(clean, tmp_path, tf):
    """A graph whose ``Save`` no SignatureDef reaches passes the ops policy; an MLmodel naming a
    tensor behind it would make every request write a file. Refused at load; nothing written."""
    marker = tmp_path / "saved-by-request"

    def with_hidden_save(tf, x, w):
        save = tf.raw_ops.Save(filename=str(marker), tensor_names=["w"], data=[w], name="hidden_save")
        with tf.control_dependencies([save]):
            tf.identity(w, name="behind_save")
        return {"y": tf.matmul(x, w, name="y")}

    model = tmp_path / "model"
    shutil.copytree(clean, model)
    _swap_graph(model, _builder_save(tf, tmp_path / "hidden", with_hidden_save))

    def point_at_save(conf):
        conf["signature_defs"]["serving_default"]["outputs"]["y"]["name"] = "behind_save:0"

    _edit_flavor(model, point_at_save)
    # The attack is real: a handle that runs what MLmodel names writes the file at a request.
    from mlflow_eas_savedmodel.load import read_conf
    from mlflow_eas_savedmodel.model import EasSavedModel

    conf = read_conf(str(model))
    EasSavedModel(str(model / "savedmodel"), conf.signature_defs, conf.default_signature, device="cpu").predict(
        {"x": X})
    assert marker.exists()
    marker.unlink()
    expected = (
        f"The MLmodel file of {str(model)!r} describes other SignatureDefs than its saved_model.pb "
        "(eas_savedmodel.signature_defs must equal them: the model runs the tensors MLmodel "
        "names); it was not loaded:\n  output 'y' of signature 'serving_default': MLmodel says "
        "name 'behind_save:0', saved_model.pb 'y:0'\nDownload or copy the model again, or re-log "
        "it with mlflow_eas_savedmodel.log_model."
    )
    messages = [
        _message(lambda: mes.load_model(str(model), device="cpu", verify_integrity=False)),
        _message(lambda: mes.load_model(str(model), device="cpu")),
        _message(lambda: mlflow.pyfunc.load_model(str(model))),
        _message(lambda: write_eas_package(str(model), tmp_path / "package")),
    ]
    if "'hidden_save'" in messages[0]:
        # An ops policy that refuses the stray Save itself (issue 20 item 2) stops it first.
        assert "it was not loaded" in messages[0], messages[0]
        expected = messages[0]
    assert messages == [expected] * 4
    assert not marker.exists()


@pytest.mark.parametrize("edit, problem", [
    (lambda c: c["signature_defs"]["serving_default"]["outputs"]["y"].update(name="w:0"),
     "output 'y' of signature 'serving_default': MLmodel says name 'w:0', saved_model.pb 'y:0'"),
    (lambda c: c["signature_defs"]["serving_default"]["outputs"].update(
        extra={"name": "w:0", "dtype": "float32", "shape": [2, 1]}),
     "output 'extra' of signature 'serving_default' is in MLmodel but not in saved_model.pb"),
    (lambda c: c["signature_defs"]["serving_default"]["inputs"].pop("x"),
     "input 'x' of signature 'serving_default' of saved_model.pb is missing from MLmodel"),
    (lambda c: c["signature_defs"]["serving_default"]["inputs"]["x"].update(dtype="float64"),
     "input 'x' of signature 'serving_default': MLmodel says dtype 'float64', saved_model.pb 'float32'"),
    (lambda c: c["signature_defs"].update(other=c["signature_defs"]["serving_default"]),
     "signature 'other' is in MLmodel but not in saved_model.pb"),
])
def test_mlmodel_signature_defs_must_equal_the_graphs(clean, tmp_path, edit, problem):
    model = tmp_path / "model"
    shutil.copytree(clean, model)
    _edit_flavor(model, edit)
    message = _message(lambda: mes.load_model(str(model), device="cpu"))
    assert "describes other SignatureDefs than its saved_model.pb" in message and problem in message, message


def test_tensorflow_load_errors_are_mlflow_exceptions(clean, tmp_path, tf):
    """Damage the pre-load check lets through when the hashes are skipped: what TensorFlow
    raises while loading becomes one MlflowException naming the fix."""
    truncated = _truncated_copy(clean, tmp_path / "truncated")
    message = _message(lambda: mes.load_model(str(truncated), device="cpu", verify_integrity=False))
    assert message.startswith(f"TensorFlow cannot load the SavedModel at {str(truncated / 'savedmodel')!r}: "
                              "OutOfRangeError: "), message
    assert "Its files are damaged or do not belong together: download or copy the model again" in message
    assert "Traceback" not in message and "Original stack trace" not in message

    # A SignatureDef (in saved_model.pb and MLmodel alike) naming a tensor the graph lacks.
    missing = tmp_path / "missing"
    shutil.copytree(clean, missing)
    from tensorflow.core.protobuf import saved_model_pb2

    pb = missing / "savedmodel" / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    saved_model.meta_graphs[0].signature_def["serving_default"].outputs["y"].name = "nothere:0"
    pb.write_bytes(saved_model.SerializeToString())
    _edit_flavor(missing, lambda c: c["signature_defs"]["serving_default"]["outputs"]["y"].update(name="nothere:0"))
    message = _message(lambda: mlflow.pyfunc.load_model(str(missing), model_config={"verify_integrity": False}))
    assert "TensorFlow cannot load the SavedModel" in message
    assert "InvalidArgumentError: Tensor nothere:0, specified in either feed_devices or fetch_devices was not found" in message


def _truncated_copy(clean, target):
    shutil.copytree(clean, target)
    data = target / "savedmodel" / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:3])
    return target


def test_serve_eas_ends_in_one_error_line_for_a_damaged_model(clean, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mlflow_eas_savedmodel.cli import cli

    truncated = _truncated_copy(clean, tmp_path / "truncated")
    monkeypatch.setenv("MLFLOW_EAS_SAVEDMODEL_VERIFY", "0")
    result = CliRunner().invoke(cli, ["serve-eas", str(truncated), "--name", "svc", "-p", "0"])
    message = _cli_message(result)
    assert message.startswith("TensorFlow cannot load the SavedModel at "), message
    assert "OutOfRangeError: Node: 'save/RestoreV2'" in message, message


def _writing_savedmodel_tf1(tf, root, marker):
    def make(tf, x, w):
        drop = tf.io.write_file(str(marker), "pwned", name="drop")
        with tf.control_dependencies([drop]):
            return {"y": tf.identity(tf.matmul(x, w), name="y")}

    return _builder_save(tf, root / "tf1", make)


def _writing_savedmodel_tf2(tf, root, marker):
    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x):
            tf.io.write_file(str(marker), "pwned", name="drop")
            return {"y": x * 2.0}

    module = Writer()
    tf.saved_model.save(module, str(root / "tf2"), signatures={"serving_default": module.serve})
    return str(root / "tf2")


def _writing_checkpoint(tf, root, marker):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.array([[2.0], [3.0]], np.float32))
        drop = tf.io.write_file(str(marker), "pwned", name="drop")
        with tf.control_dependencies([drop]):
            tf.identity(tf.matmul(x, w), name="y")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(sess, str(root / "ckpt" / "model.ckpt"))
    return prefix, {"inputs": {"x": "x:0"}, "outputs": {"y": "y:0"}}


@pytest.mark.parametrize("kind", ["saved_model_tf1", "saved_model_tf2", "checkpoint", "session", "keras"])
def test_save_model_refuses_each_source_kind_before_anything_of_it_runs(kind, tmp_path, tf):
    """A marker-writing op in the request path of each source kind: ``save_model`` refuses it
    before its reference run, ``main_op`` or restore (the verification runs every SignatureDef
    on the source and would write the marker)."""
    marker = tmp_path / "marker-written"
    kwargs = {}
    if kind == "saved_model_tf1":
        source = _writing_savedmodel_tf1(tf, tmp_path, marker)
    elif kind == "saved_model_tf2":
        source = _writing_savedmodel_tf2(tf, tmp_path, marker)
    elif kind == "checkpoint":
        source, kwargs = _writing_checkpoint(tf, tmp_path, marker)
    elif kind == "session":
        graph = tf.Graph()
        with graph.as_default():
            x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
            drop = tf.io.write_file(str(marker), "pwned", name="drop")
            with tf.control_dependencies([drop]):
                y = tf.identity(x * 2.0, name="y")
        source = tf.compat.v1.Session(graph=graph)
        kwargs = {"inputs": {"x": x}, "outputs": {"y": y}}
    else:
        import keras

        class Writer(keras.layers.Layer):
            def call(self, inputs):
                tf.io.write_file(str(marker), "pwned", name="drop")
                return inputs * 2.0

        inp = keras.Input((2,), name="x")
        source = keras.Model(inp, Writer(name="writer")(inp))
    assert not marker.exists()  # building the sources ran nothing of them
    with pytest.raises(MlflowException) as info:
        mes.save_model(source, tmp_path / "model", input_example={"x": X}, **kwargs)
    assert "WriteFile" in info.value.message and "drop" in info.value.message, info.value.message
    assert not marker.exists()
    assert not (tmp_path / "model").exists()


def test_a_graph_failing_at_predict_is_an_mlflow_exception_and_a_500(clean, tmp_path, tf):
    """Not the caller's inputs: a variable the SavedModel's Saver never restores fails at every
    request (FailedPreconditionError); predict raises an MlflowException (INTERNAL_ERROR) and
    serve-eas answers 500 with its message."""
    import urllib.error
    import urllib.request

    from mlflow_eas_savedmodel.eas import protocol
    from mlflow_eas_savedmodel.eas.endpoint import serve_eas

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.array([[2.0], [3.0]], np.float32))
        never = tf.compat.v1.get_variable("never_restored", initializer=np.float32(1.0))
        y = tf.identity(tf.matmul(x, w) * never, name="y")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(tmp_path / "unrestored"))
            builder.add_meta_graph_and_variables(
                sess, ["serve"], saver=tf.compat.v1.train.Saver([w]),
                signature_def_map={"serving_default": tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})})
            builder.save()
    model = tmp_path / "model"
    shutil.copytree(clean, model)
    _swap_graph(model, tmp_path / "unrestored")
    expected = "Signature 'serving_default' failed in TensorFlow: FailedPreconditionError: "
    handle = mes.load_model(str(model), device="cpu")
    message = _message(lambda: handle.predict({"x": X}))
    assert message.startswith(expected) and "never_restored" in message, message
    assert "check-runtime`, or re-log it." in message and "Original stack trace" not in message
    with pytest.raises(MlflowException) as info:
        mlflow.pyfunc.load_model(str(model)).predict(X)
    assert info.value.error_code == "INTERNAL_ERROR" and info.value.message.startswith(expected)
    with serve_eas(str(model), "svc") as ep:
        with pytest.raises(urllib.error.HTTPError) as http:
            urllib.request.urlopen(urllib.request.Request(ep.url, data=protocol.encode_request({"x": X})), timeout=30)
        assert http.value.code == 500 and http.value.read().decode().startswith(expected)


def test_a_signature_def_tensorflow_cannot_read_is_refused(clean, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    model = tmp_path / "model"
    shutil.copytree(clean, model)
    pb = model / "savedmodel" / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    saved_model.meta_graphs[0].signature_def["serving_default"].inputs["x"].dtype = 0  # DT_INVALID
    pb.write_bytes(saved_model.SerializeToString())
    _edit_flavor(model, lambda conf: conf.update(file_sha256=integrity.hash_tree(model / "savedmodel")))
    message = _message(lambda: mes.load_model(str(model), device="cpu"))
    assert message.startswith(f"The saved_model.pb of the model at {str(model)!r} has a SignatureDef "
                              "TensorFlow cannot read (Cannot convert"), message
    assert "it was not loaded. Download or copy the model again, or re-log it." in message
