"""The EAS commands through the CLI: inspect (without TensorFlow), export, eas-config."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import runtimes
from mlflow_eas_savedmodel.cli import cli
from mlflow_eas_savedmodel.eas.inspection import describe_model
from mlflow_eas_savedmodel.eas.package import read_archive_names, verify_manifest, write_eas_package
from mlflow_eas_savedmodel.eas.service_config import service_config, service_name_from
from support.mlmodel import read_flavor, read_mlmodel, write_mlmodel


@pytest.fixture(scope="module")
def two_headed(tf):
    """Inputs ``image`` (float32, 4) and ``count`` (int32, 1); outputs ``scores`` and ``total``."""
    import keras

    keras.utils.set_random_seed(3)
    image = keras.Input((4,), name="image")
    count = keras.Input((1,), name="count", dtype="int32")
    scores = keras.layers.Dense(3, name="scores")(image)
    total = keras.layers.Add(name="total")(
        [keras.layers.Dense(1)(image), keras.ops.cast(count, "float32")]
    )
    return keras.Model({"image": image, "count": count}, {"scores": scores, "total": total})


@pytest.fixture(scope="module")
def saved(tmp_path_factory, two_headed):
    path = tmp_path_factory.mktemp("eas_cli") / "model"
    example = {
        "image": np.random.default_rng(0).random((3, 4), dtype=np.float32),
        "count": np.array([[1], [2], [3]], np.int32),
    }
    mes.save_model(two_headed, path, input_example=example)
    return str(path)


def _conf(path):
    return read_flavor(path)


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# ---------------------------------------------------------------------------------------- inspect


def test_inspect_table_shows_every_signature_field(saved):
    conf = _conf(saved)
    result = _invoke("inspect", saved)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"Saved with TensorFlow {conf['tensorflow_version']} (source: keras, tags: serve)" in out
    assert "Compatible EAS processors: " + ", ".join(conf["eas_processors"]) in out
    assert "SignatureDef 'serving_default' (default)  method: tensorflow/serving/predict" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("  input", "  output"))]
    sig = conf["signature_defs"]["serving_default"]
    expected = [
        [kind[:-1], key, t["dtype"], *("(" + ", ".join("None" if d == -1 else str(d) for d in t["shape"]) + ")").split(), t["name"]]
        for kind in ("inputs", "outputs")
        for key, t in sig[kind].items()
    ]
    assert rows == expected
    assert [r[1] for r in rows] == ["count", "image", "scores", "total"]
    assert rows[0][2] == "int32"


def test_inspect_json_is_the_recorded_metadata(saved):
    result = _invoke("inspect", saved, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    conf = _conf(saved)
    assert data["signature_defs"] == conf["signature_defs"]
    assert data["eas_processors"] == conf["eas_processors"] == list(runtimes.PROCESSORS)
    assert data["tensorflow_version"] == conf["tensorflow_version"]
    assert data["default_signature"] == "serving_default"
    assert data == describe_model(saved)


def test_inspect_never_imports_tensorflow(saved):
    code = (
        "import sys\n"
        "from mlflow_eas_savedmodel.cli import cli\n"
        "try:\n"
        "    cli(['inspect', sys.argv[1], '--json'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "print('TF_LOADED=%s' % ('tensorflow' in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, saved], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.rsplit("TF_LOADED", 1)[0])["signature_defs"] == _conf(saved)["signature_defs"]
    assert "TF_LOADED=False" in proc.stdout


def test_inspect_reads_only_the_mlmodel_of_a_logged_model(tracking_uri, two_headed, tmp_path):
    with mlflow.start_run():
        info = mes.log_model(two_headed, name="model")
    # Delete the SavedModel from the artifact store: inspect must not need it.
    local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl"))
    logged = mlflow.MlflowClient().get_logged_model(info.model_id)
    shutil.rmtree(os.path.join(logged.artifact_location.replace("file://", ""), "savedmodel"))
    result = _invoke("inspect", info.model_uri, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["signature_defs"] == _conf(local)["signature_defs"]
    # ... while anything that needs the SavedModel now fails.
    with pytest.raises(MlflowException, match="The SavedModel folder .* is missing. Re-download the model"):
        mes.load_model(info.model_uri)


def test_inspect_refuses_a_model_of_another_flavor(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    mlflow.models.Model(flavors={"sklearn": {"pickled_model": "m.pkl"}}).save(str(other / "MLmodel"))
    result = CliRunner().invoke(cli, ["inspect", str(other)])
    assert result.exit_code == 1
    assert "was not saved by mlflow_eas_savedmodel (its flavors: ['sklearn'])" in result.output
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "Cannot read the MLmodel file of" in result.output


# ----------------------------------------------------------------------------------------- export


def _source_files(saved):
    root = os.path.join(saved, "savedmodel")
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


def test_export_folder_is_the_plain_savedmodel_and_loads(saved, tmp_path, tf):
    result = _invoke("export", saved, str(tmp_path / "upload" / "mnist"))
    assert result.exit_code == 0, result.output
    root = tmp_path / "upload" / "mnist"
    dest = root / "savedmodel"
    manifest = root / "SHA256SUMS"
    exported = sorted(os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest) for f in fs)
    assert exported == _source_files(saved)
    assert sorted(os.listdir(tmp_path / "upload")) == ["mnist"]  # nothing beside DEST
    assert sorted(os.listdir(root)) == ["SHA256SUMS", "savedmodel"]
    assert result.output.splitlines() == [
        f"Wrote {len(exported) + 1} files into {root}:",
        f"  savedmodel/  SavedModel (folder, {len(exported)} files): the service's model_path",
        "  SHA256SUMS  manifest: sha256sum -c SHA256SUMS",
    ]
    assert "MLmodel" not in exported and not any(f.endswith(".sha256") for f in exported)
    assert verify_manifest(str(manifest)) == []
    lines = manifest.read_text().splitlines()
    assert len(lines) == len(exported) and all(line.split("  ")[1].startswith("savedmodel/") for line in lines)
    # sha256sum agrees with the manifest format.
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "-c", "--quiet", manifest.name], cwd=manifest.parent, check=True)

    # The exported folder is a SavedModel that TF's TF1 loader runs like our handle.
    x = {"image": np.ones((2, 4), np.float32), "count": np.array([[1], [5]], np.int32)}
    sig = _conf(saved)["signature_defs"]["serving_default"]
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(dest))
        got = sess.run(
            {k: t["name"] for k, t in sig["outputs"].items()},
            {sig["inputs"][k]["name"]: v for k, v in x.items()},
        )
    want = mes.load_model(saved, device="cpu").predict(x)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])

    (dest / "saved_model.pb").write_bytes(b"corrupt")
    assert verify_manifest(str(manifest)) == ["checksum mismatch: savedmodel/saved_model.pb"]


@pytest.mark.parametrize("archive", ["tar.gz", "zip"])
def test_export_archive_has_savedmodel_files_at_root(saved, tmp_path, archive):
    result = _invoke("export", saved, str(tmp_path / "model"), "--archive", archive)
    assert result.exit_code == 0, result.output
    root = tmp_path / "model"
    path = root / f"savedmodel.{archive}"
    assert sorted(os.listdir(tmp_path)) == ["model"] and sorted(os.listdir(root)) == ["SHA256SUMS", path.name]
    assert f"  savedmodel.{archive}  SavedModel ({archive} archive): the service's model_path" in result.output
    assert read_archive_names(str(path)) == _source_files(saved)
    manifest = root / "SHA256SUMS"
    first = manifest.read_text().splitlines()[0]
    assert first.endswith(f"  savedmodel.{archive}")
    # Extracted into DEST/savedmodel/: every listed file (archive + members) checks out.
    if archive == "zip":
        with zipfile.ZipFile(path) as zf:
            zf.extractall(root / "savedmodel")
    else:
        with tarfile.open(path) as tar:
            tar.extractall(root / "savedmodel", filter="data")
    assert verify_manifest(str(manifest)) == []
    # Reproducible: the same model exports to the same bytes.
    again = write_eas_package(saved, str(tmp_path / "again"), archive=archive)
    assert again["path"] == str(tmp_path / "again" / f"savedmodel.{archive}")
    assert open(again["manifest"]).read().splitlines()[0].split()[0] == first.split()[0]


def test_export_errors(saved, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(MlflowException, match="already exists. Export to a new path, or delete it first"):
        write_eas_package(saved, str(tmp_path / "taken"))
    with pytest.raises(MlflowException, match=r"Unknown archive format '7z'. Use one of \['tar.gz', 'zip'\]"):
        write_eas_package(saved, str(tmp_path / "x"), archive="7z")
    with pytest.raises(MlflowException) as e:
        write_eas_package(saved, str(tmp_path / "x.tar.gz"), archive="tar.gz")
    assert e.value.message == (
        f"DEST {str(tmp_path / 'x.tar.gz')!r} is the folder the export writes into (the archive "
        f"goes inside it, as savedmodel.tar.gz). Pass {str(tmp_path / 'x')!r} instead."
    )
    result = CliRunner().invoke(cli, ["export", saved, str(tmp_path / "y"), "--archive", "rar"])
    assert result.exit_code == 2 and "'rar' is not one of 'tar.gz', 'zip'" in result.output

    tampered = tmp_path / "tampered"
    shutil.copytree(saved, tampered)
    (tampered / "savedmodel" / "saved_model.pb").write_bytes(b"\x00" * 10)
    before = sorted(os.listdir(tmp_path))
    result = CliRunner().invoke(cli, ["export", str(tampered), str(tmp_path / "z")])
    assert result.exit_code == 1
    assert "does not match the SHA-256 hashes recorded" in result.output
    assert "file 'saved_model.pb' was changed or truncated (10 bytes" in result.output
    assert sorted(os.listdir(tmp_path)) == before  # no DEST, no partial folder


# ------------------------------------------------------------------------------------- eas-config


def test_eas_config_prints_the_service_json(saved):
    result = _invoke(
        "eas-config", saved, "--processor", "tensorflow_cpu_1.15", "--model-path",
        "oss://bucket/models/mnist/", "--warm-up-path", "oss://bucket/warmup/serving_default.bin",
        "--name", "mnist_v1", "--instance", "2", "--cpu", "4", "--memory", "8000",
        "--batching", "--max-batch-size", "32",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "name": "mnist_v1",
        "processor": "tensorflow_cpu_1.15",
        "model_path": "oss://bucket/models/mnist/",
        "warm_up_data_path": "oss://bucket/warmup/serving_default.bin",
        "metadata": {"instance": 2, "cpu": 4, "memory": 8000, "rpc": {"batching": True, "max_batch_size": 32}},
    }
    plain = json.loads(_invoke("eas-config", saved, "--processor", "tensorflow_gpu_2.7",
                               "--model-path", "oss://b/m.tar.gz").output)
    assert plain == {
        "name": service_name_from(saved),
        "processor": "tensorflow_gpu_2.7",
        "model_path": "oss://b/m.tar.gz",
        "metadata": {"instance": 1, "cpu": 2, "memory": 4000},
    }
    assert service_name_from("models:/My-Model/3") == "my_model_3"
    assert service_name_from("runs:/0a1b/model") == "m_0a1b_model"


def test_eas_config_refuses_a_processor_the_model_cannot_run_on(saved, tmp_path):
    # The same model, but its metadata records that TF 1.12 cannot run it.
    restricted = tmp_path / "restricted"
    shutil.copytree(saved, restricted)
    mlmodel = read_mlmodel(restricted)
    conf = mlmodel["flavors"][mes.FLAVOR_NAME]
    conf["eas_processors"] = [p for p in conf["eas_processors"] if not p.endswith("1.12")]
    conf["eas_incompatibilities"] = {"1.12": ["op SelectV2 does not exist in TF 1.12"]}
    write_mlmodel(restricted, mlmodel)

    result = CliRunner().invoke(cli, ["eas-config", str(restricted), "--processor", "tensorflow_cpu_1.12",
                                      "--model-path", "oss://b/m/"])
    assert result.exit_code == 1
    assert "is not compatible with EAS processor 'tensorflow_cpu_1.12' (op SelectV2 does not exist in TF 1.12)" in result.output
    assert "Use one of: tensorflow_cpu_1.14, tensorflow_cpu_1.15" in result.output
    assert service_config(str(restricted), "tensorflow_cpu_1.14", "oss://b/m/")["processor"] == "tensorflow_cpu_1.14"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"processor": "tensorflow_cpu_9.9"}, "Unknown EAS processor 'tensorflow_cpu_9.9'. Use one of: tensorflow_cpu_1.12"),
        ({"processor": "tensorflow_gpu_2.3"}, "Unknown EAS processor 'tensorflow_gpu_2.3'"),
        ({"model_path": "/local/folder"}, "model_path '/local/folder' must be an oss:// or http"),
        ({"warm_up_data_path": "warm.bin"}, "warm_up_data_path 'warm.bin' must be an oss://"),
        ({"name": "Bad-Name"}, "Service name 'Bad-Name' is not valid on EAS"),
        ({"cpu": 0}, "cpu must be a positive integer; got 0"),
        ({"max_batch_size": 8}, "max_batch_size only applies with batching: pass --batching as well"),
        ({"batching": True, "max_batch_size": 0}, "max_batch_size must be a positive integer; got 0"),
    ],
)
def test_eas_config_errors(saved, kwargs, message):
    args = {"processor": "tensorflow_cpu_1.15", "model_path": "oss://b/m/", **kwargs}
    with pytest.raises(MlflowException, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        service_config(saved, **args)
