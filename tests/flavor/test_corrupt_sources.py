"""Corrupt source files: each a clear MlflowException naming the file, never a crashed interpreter.

All cases are saved by one child process that reports each outcome as a JSON line: a native
crash (HDF5, protobuf or TensorFlow C++ aborting) would kill it, and the parent would see the
exit status and which case was running, instead of losing the whole test session.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

_CHILD = textwrap.dedent(
    """
    import json, os, sys, traceback
    import mlflow_eas_savedmodel as mes

    cases = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    for case in cases:
        print(json.dumps({"id": case["id"], "outcome": "started"}), flush=True)
        try:
            mes.save_model(case["path"], os.path.join(out, case["id"]))
            result = {"outcome": "saved"}
        except Exception as e:
            result = {"outcome": "raised", "type": f"{type(e).__module__}.{type(e).__name__}",
                      "message": str(e), "traceback": traceback.format_exc()[-3000:]}
        result["id"] = case["id"]
        result["leftovers"] = sorted(os.listdir(out))
        print(json.dumps(result), flush=True)
    """
)


def _truncate_copy(src, dst, fraction=0.5):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * fraction)])


def _keras_files(folder, tf):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="image")
    model = keras.Model(inp, keras.layers.Dense(3, name="scores")(inp))
    model.save(folder / "good.h5")
    model.save(folder / "good.keras")
    cases = {}
    _truncate_copy(folder / "good.h5", folder / "truncated.h5")
    cases["truncated_h5"] = folder / "truncated.h5"
    (folder / "garbage.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    cases["garbage_h5"] = folder / "garbage.h5"
    (folder / "not_a_zip.keras").write_bytes(b"this is not a zip archive\n" * 40)
    cases["not_a_zip_keras"] = folder / "not_a_zip.keras"
    _truncate_copy(folder / "good.keras", folder / "truncated.keras")
    cases["truncated_keras"] = folder / "truncated.keras"
    # A well-formed zip whose weights member is garbage: the damage is inside the archive.
    with zipfile.ZipFile(folder / "good.keras") as src, zipfile.ZipFile(folder / "bad_weights.keras", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(".h5"):
                data = data[: len(data) // 3]
            dst.writestr(item, data)
    cases["bad_weights_keras"] = folder / "bad_weights.keras"
    return cases


def _checkpoint_files(folder, tf):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.ones((4, 3), np.float32))
        tf.identity(tf.matmul(x, w), name="y")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(sess, str(folder / "ckpt" / "model"))
    for name in os.listdir(folder / "ckpt"):
        if ".data-" in name:
            os.remove(folder / "ckpt" / name)
    return {"checkpoint_missing_shard": prefix}


def _saved_model_files(folder):
    garbage = folder / "garbage_pb"
    (garbage / "variables").mkdir(parents=True)
    (garbage / "saved_model.pb").write_bytes(np.random.default_rng(1).bytes(2048))
    broken = folder / "broken_pbtxt"
    (broken / "variables").mkdir(parents=True)
    (broken / "saved_model.pbtxt").write_text('saved_model_schema_version: 1\nmeta_graphs { graph_def { node { name: "x" op: \n')
    return {"garbage_saved_model_pb": garbage, "unparsable_pbtxt": broken}


# case id -> (the source kind it feeds, regex the message must match: it names the file)
CASES = {
    "truncated_h5": ("keras", r"Cannot load H5 file '.*truncated\.h5'.*truncated file"),
    "garbage_h5": ("keras", r"Cannot load H5 file '.*garbage\.h5'.*file signature not found"),
    "not_a_zip_keras": ("keras", r"Keras model file '.*not_a_zip\.keras' is not a zip archive"),
    "truncated_keras": ("keras", r"Keras model file '.*truncated\.keras' is not a zip archive"),
    "bad_weights_keras": ("keras", r"Cannot load Keras model file '.*bad_weights\.keras'.*truncated file"),
    "checkpoint_missing_shard": ("checkpoint", r"model\.data-00000-of-00001"),
    "garbage_saved_model_pb": ("saved_model", r"Cannot read '.*garbage_pb/saved_model\.pb'.*The file is damaged"),
    "unparsable_pbtxt": ("saved_model", r"Cannot read '.*broken_pbtxt/saved_model\.pbtxt'.*The file is damaged"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, tf):
    """Every case saved in one child process: ``{case id: outcome}`` plus the exit status."""
    folder = tmp_path_factory.mktemp("corrupt")
    paths = _keras_files(folder, tf)
    paths.update(_checkpoint_files(folder, tf))
    paths.update(_saved_model_files(folder))
    runnable = [{"id": case, "path": str(paths[case])} for case in CASES]
    (folder / "cases.json").write_text(json.dumps(runnable))
    (folder / "child.py").write_text(_CHILD)
    out = folder / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, str(folder / "child.py"), str(folder / "cases.json"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            results[record["id"]] = record
    return {"returncode": proc.returncode, "stderr": proc.stderr[-3000:], "results": results}


def test_child_process_survived_every_case(outcomes):
    assert outcomes["returncode"] == 0, outcomes["stderr"]
    assert all(r["outcome"] != "started" for r in outcomes["results"].values())


@pytest.mark.parametrize("case", list(CASES))
def test_corrupt_source_is_a_clear_error_naming_the_file(outcomes, case):
    _, message = CASES[case]
    result = outcomes["results"].get(case)
    assert result is not None, f"case never ran; child exit {outcomes['returncode']}: {outcomes['stderr']}"
    assert result["outcome"] == "raised", f"{case} was saved from a corrupt source"
    assert result["type"] == "mlflow.exceptions.MlflowException", result["traceback"]
    import re

    assert re.search(message, result["message"], re.DOTALL), result["message"]
    # A failed save leaves nothing behind, not even the temp folder.
    assert result["leftovers"] == []
