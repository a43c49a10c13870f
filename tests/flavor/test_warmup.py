"""Warm-up files: EAS .bin and TF Serving's TFRecord, parsed back with the official protos and replayed.

The model is ``tests/support/multi_signature.py``'s ``EAS_MODEL`` without the string output ``echo``
(the replays compare outputs as numbers).
"""

import base64
import os

from support import multi_signature
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.cli import cli
from mlflow_eas_savedmodel.eas import protocol
from mlflow_eas_savedmodel.eas.endpoint import serve_eas
from mlflow_eas_savedmodel.eas.official_client import run_client_ops
from mlflow_eas_savedmodel.eas.warmup import read_tf_serving_warmup, write_warmup_files

X = multi_signature.EAS_EXAMPLE
WORDS = np.array([b"a", b"bb", b"zz"], dtype=object)


@pytest.fixture(scope="module")
def session_model(tmp_path_factory, tf):
    """``serving_default`` (x -> y, n) with an input example; ``lookup`` (s -> ids) without."""
    path = str(tmp_path_factory.mktemp("warmup") / "model")
    model = {**multi_signature.EAS_MODEL, "lookup": "ids"}
    return multi_signature.save(tf, path, model, input_example={"x": X})


@pytest.fixture(scope="module")
def handle(session_model):
    return mes.load_model(session_model, device="cpu")


def test_eas_bin_files_are_official_requests_that_replay(session_model, handle, tmp_path):
    written = write_warmup_files(session_model, tmp_path / "warmup")
    assert written["inputs_from"] == {"serving_default": "input example", "lookup": "synthesised"}
    assert sorted(os.listdir(tmp_path / "warmup")) == ["assets.extra", "warm_up_lookup.bin", "warm_up_serving_default.bin"]
    bodies = {name: open(path, "rb").read() for name, path in written["eas"].items()}

    # Parsed by the official client's own protos...
    parsed = run_client_ops([{"op": "parse_request", "data": base64.b64encode(b).decode()} for b in bodies.values()])
    by_name = dict(zip(bodies, parsed))
    default = by_name["serving_default"]
    assert default["signature_name"] == "serving_default" and default["output_filter"] == []
    assert default["inputs"]["x"]["dtype"] == protocol.DT_FLOAT and default["inputs"]["x"]["shape"] == [2, 3]
    np.testing.assert_array_equal(np.float32(default["inputs"]["x"]["values"]), X.reshape(-1))
    lookup = by_name["lookup"]["inputs"]["s"]
    assert lookup["dtype"] == protocol.DT_STRING and lookup["shape"] == [2]  # synthesised, batch 2

    # ...and replayed by the official client against the local endpoint.
    with serve_eas(session_model, "warm") as endpoint:
        replies = run_client_ops([
            {"op": "predict", "endpoint": endpoint.endpoint, "service": "warm", "data": base64.b64encode(b).decode()}
            for b in bodies.values()
        ])
    for (name, body), reply in zip(bodies.items(), replies):
        assert "error" not in reply, reply
        _, inputs, _ = protocol.decode_request(body)
        want = handle.predict(inputs, signature_name=name)
        assert sorted(reply["outputs"]) == sorted(want)
        for key, value in want.items():
            got = reply["outputs"][key]
            assert got["shape"] == list(value.shape)
            np.testing.assert_array_equal(np.array(got["values"], dtype=value.dtype).reshape(value.shape), value)


def test_tf_serving_warmup_is_prediction_logs_of_the_same_requests(session_model, handle, tmp_path):
    written = write_warmup_files(session_model, tmp_path, inputs={"x": X * 2, "s": WORDS})
    assert written["inputs_from"] == {"serving_default": "given inputs", "lookup": "given inputs"}
    assert written["tf_serving"] == str(tmp_path / "assets.extra" / "tf_serving_warmup_requests")
    records = read_tf_serving_warmup(written["tf_serving"])
    assert [name for name, _ in records] == ["lookup", "serving_default"]  # the metadata's order
    for name, inputs in records:
        _, eas_inputs, _ = protocol.decode_request(open(written["eas"][name], "rb").read())
        assert sorted(inputs) == sorted(eas_inputs)
        for key in inputs:
            np.testing.assert_array_equal(inputs[key], eas_inputs[key])
        # Replay against the handle: the same outputs as the EAS request gives.
        got, want = handle.predict(inputs, signature_name=name), handle.predict(eas_inputs, signature_name=name)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(dict(records)["serving_default"]["x"], X * 2)
    assert dict(records)["lookup"]["s"].tolist() == WORDS.tolist()

    # The TF Serving protos themselves: model_spec and PredictLog type.
    from tensorflow_serving.apis import prediction_log_pb2

    import tensorflow as tf

    first = next(iter(tf.compat.v1.io.tf_record_iterator(written["tf_serving"])))
    log = prediction_log_pb2.PredictionLog.FromString(first)
    assert log.WhichOneof("log_type") == "predict_log"
    assert log.predict_log.request.model_spec.name == "model"


def test_warmup_cli_one_signature_and_errors(session_model, tmp_path):
    result = CliRunner().invoke(cli, ["warmup", session_model, str(tmp_path / "w"), "--signature", "lookup"])
    assert result.exit_code == 0, result.output
    assert f"EAS warm-up (lookup, synthesised): {tmp_path / 'w' / 'warm_up_lookup.bin'}" in result.output
    assert sorted(os.listdir(tmp_path / "w")) == ["assets.extra", "warm_up_lookup.bin"]
    assert [name for name, _ in read_tf_serving_warmup(str(tmp_path / "w" / "assets.extra" / "tf_serving_warmup_requests"))] == ["lookup"]

    result = CliRunner().invoke(cli, ["warmup", session_model, str(tmp_path / "v"), "--signature", "nope"])
    assert result.exit_code == 1
    assert "Unknown signature(s) ['nope']. This model has: ['lookup', 'serving_default']." in result.output
    with pytest.raises(MlflowException, match=r"Input 's' of signature 'lookup' takes strings; the given values are float32"):
        write_warmup_files(session_model, tmp_path / "u", inputs={"s": np.zeros(2, np.float32)})


@pytest.mark.parametrize("archive", [None, "tar.gz"])
def test_export_warmup_puts_tf_servings_file_inside_and_eas_bins_into_dest(session_model, handle, tmp_path, archive, tf):
    import tarfile

    from mlflow_eas_savedmodel.eas.package import verify_manifest

    args = ["export", "-m", session_model, str(tmp_path / "upload" / "model"), "--warmup"]
    result = CliRunner().invoke(cli, args + (["--archive", archive] if archive else []))
    assert result.exit_code == 0, result.output
    root = tmp_path / "upload" / "model"
    dest = root / ("savedmodel.tar.gz" if archive else "savedmodel")
    if archive:
        with tarfile.open(dest) as tar:
            tar.extractall(root / "savedmodel", filter="data")
    savedmodel = root / "savedmodel"
    assert sorted(os.listdir(savedmodel)) == ["assets.extra", "saved_model.pb", "variables"]
    assert sorted(os.listdir(tmp_path / "upload")) == ["model"]  # nothing beside DEST
    top = ["SHA256SUMS", "warm_up_lookup.bin", "warm_up_serving_default.bin", dest.name]
    assert sorted(os.listdir(root)) == sorted(top + (["savedmodel"] if archive else []))
    assert verify_manifest(str(root / "SHA256SUMS")) == []
    written = 4 if archive else 3 + sum(len(fs) for _, _, fs in os.walk(savedmodel))
    assert result.output.startswith(f"Wrote {written} files into {root}:\n")
    for name in ("serving_default", "lookup"):
        assert f"  warm_up_{name}.bin  EAS warm-up request ({name}): warm_up_data_path" in result.output
    assert "  (TF Serving's assets.extra/tf_serving_warmup_requests is inside the SavedModel)" in result.output

    # The same requests as the standalone `warmup` command writes, and they replay on the model.
    alone = write_warmup_files(session_model, tmp_path / "alone")
    inside = read_tf_serving_warmup(str(savedmodel / "assets.extra" / "tf_serving_warmup_requests"))
    for (name, inputs), (alone_name, alone_inputs) in zip(inside, read_tf_serving_warmup(alone["tf_serving"])):
        assert name == alone_name and sorted(inputs) == sorted(alone_inputs)
        for key in inputs:
            np.testing.assert_array_equal(inputs[key], alone_inputs[key])
        handle.predict(inputs, signature_name=name)
        assert open(root / f"warm_up_{name}.bin", "rb").read() == open(alone["eas"][name], "rb").read()
    # The TF1 loader (what EAS runs) ignores assets.extra.
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(savedmodel))

    again = CliRunner().invoke(cli, args + (["--archive", archive] if archive else []))
    assert again.exit_code == 1 and "already exists. Export to a new path, or delete it first." in again.output


def test_tf_example_inputs_get_valid_serialized_examples(tmp_path, tf):
    """A classify SignatureDef of an Estimator-era export: the warm-up request must parse."""
    from support.estimator_models import build_estimator_saved_model

    export = build_estimator_saved_model(tf, str(tmp_path / "export"), parse_v2=False)
    mes.save_model(export, str(tmp_path / "m"))
    written = write_warmup_files(str(tmp_path / "m"), str(tmp_path / "warmup"), signatures=["classification"])
    assert written["inputs_from"]["classification"] == "synthesised"
    _, inputs, _ = protocol.decode_request(open(written["eas"]["classification"], "rb").read())
    for serialized in inputs["inputs"].reshape(-1):
        example = tf.train.Example.FromString(bytes(serialized))
        assert sorted(example.features.feature) == ["color", "x"]
        assert len(example.features.feature["x"].float_list.value) == 3
    handle = mes.load_model(str(tmp_path / "m"), device="cpu")
    try:
        scores = handle.predict(inputs, signature_name="classification")["scores"]
    finally:
        handle.close()
    assert scores.shape == (len(inputs["inputs"]), 2)
