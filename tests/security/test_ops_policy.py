"""Ops policy: file, network and Python ops are refused before anything of a source runs.

Hostile SavedModels, checkpoints and sessions are built here with ``tf.compat.v1``; files they
would write (markers) prove that nothing of them ran. See docs/security.md and
mlflow_eas_savedmodel/graph/ops_policy.py.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import runtimes
from mlflow_eas_savedmodel.graph import ops_policy
from support.paths import REPO
from support.mlmodel import read_mlmodel, write_mlmodel



def _builder_save(tf, export_dir, make, main_op=None):
    """A TF1 Builder SavedModel: ``make(tf, x)`` returns the outputs; ``main_op(tf)`` the main op."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.string, [None], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.array([2.0], np.float32))  # scalars: issue 11
        outputs = make(tf, x, w)
        init = main_op(tf) if main_op else None
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, outputs)
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": signature}, main_op=init
            )
            builder.save()
    return str(export_dir)


def _refused(source, target, *patterns, **kwargs):
    with pytest.raises(MlflowException) as info:
        mes.save_model(source, target, **kwargs)
    message = info.value.message
    assert ("nothing of it was run" in message) != ("the model was not saved" in message), message
    for pattern in patterns:
        assert pattern in message, message
    assert not os.path.exists(target)
    return message


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("root:x:0:0:secret\n")
    return path


def test_read_file_and_matching_files_in_the_outputs_are_refused(tmp_path, tf, secret):
    def make(tf, x, w):
        return {
            "leak": tf.io.read_file(str(secret), name="leak"),
            "listing": tf.io.matching_files(str(tmp_path / "*"), name="listing"),
        }

    source = _builder_save(tf, tmp_path / "sm", make)
    message = _refused(
        source, tmp_path / "m", "node 'leak' (ReadFile", "node 'listing' (MatchingFiles",
        "allow_file_ops=True",
    )
    assert "PyFunc" not in message.split("run Python;")[1].split("\nPython ops")[0]


def test_write_file_in_the_predict_path_is_refused(tmp_path, tf):
    marker = tmp_path / "written-at-predict"

    def make(tf, x, w):
        write = tf.io.write_file(str(marker), x[0], name="drop")
        with tf.control_dependencies([write]):
            return {"y": tf.identity(w, name="y")}

    source = _builder_save(tf, tmp_path / "sm", make)
    _refused(source, tmp_path / "m", "node 'drop' (WriteFile")
    assert not marker.exists()


def test_write_file_in_the_main_op_is_refused_before_the_loader_runs_it(tmp_path, tf):
    marker = tmp_path / "written-at-load"

    def main_op(tf):
        return tf.io.write_file(str(marker), "pwned", name="main_write")

    source = _builder_save(tf, tmp_path / "sm", lambda tf, x, w: {"y": tf.identity(w, name="y")}, main_op)
    _refused(source, tmp_path / "m", "node 'main_write' (WriteFile")
    assert not marker.exists()  # TensorFlow's loader runs the main op: it never got there
    # The same folder converts once its owner opts in (the main op then runs, as TensorFlow would),
    # and the artifact records the opt-in, so it loads too (running its init op again).
    mes.save_model(source, tmp_path / "m", allow_file_ops=True)
    assert marker.read_text() == "pwned"
    marker.unlink()
    mes.load_model(str(tmp_path / "m"), device="cpu")
    assert marker.read_text() == "pwned"


def test_artifact_whose_graph_was_replaced_is_refused_at_load(tmp_path, tf, secret):
    """An artifact's saved_model.pb swapped for one reading a file, its hashes rewritten to
    match: both loaders check the graph again before TensorFlow loads it."""
    import shutil

    import mlflow

    from mlflow_eas_savedmodel import integrity

    def same(tf, x, w):
        return {"y": tf.identity(x, name="y")}

    def leaky(tf, x, w):
        return {"y": tf.identity(tf.io.read_file(str(secret), name="leak"), name="y")}

    mes.save_model(_builder_save(tf, tmp_path / "clean", same), tmp_path / "m")
    hostile = _builder_save(tf, tmp_path / "hostile", leaky)
    saved_model_dir = tmp_path / "m" / "savedmodel"
    shutil.rmtree(saved_model_dir)
    shutil.copytree(hostile, saved_model_dir)
    doc = read_mlmodel(tmp_path / "m")
    doc["flavors"]["eas_savedmodel"]["file_sha256"] = integrity.hash_tree(saved_model_dir)
    write_mlmodel(tmp_path / "m", doc)
    for load in (lambda: mes.load_model(str(tmp_path / "m"), device="cpu"),
                 lambda: mlflow.pyfunc.load_model(str(tmp_path / "m"))):
        with pytest.raises(MlflowException, match=r"(?s)The SavedModel of the model at .*it was not loaded:.*node 'leak' \(ReadFile"):
            load()


@pytest.mark.parametrize("kind", ["py_func", "numpy_function"])
def test_python_ops_are_refused_even_with_allow_file_ops(tmp_path, tf, kind):
    marker = tmp_path / "python-ran"

    def run(v):
        marker.write_text("ran")
        return v

    def make(tf, x, w):
        wrap = tf.compat.v1.py_func if kind == "py_func" else tf.numpy_function
        return {"y": tf.identity(wrap(run, [w], tf.float32, name="python"), name="y")}

    source = _builder_save(tf, tmp_path / "sm", make)
    for options in ({}, {"allow_file_ops": True}):
        message = _refused(source, tmp_path / "m", "node 'python' (", "cannot run on EAS", **options)
        assert "PyFunc" in message
    assert not marker.exists()


def test_keras_model_with_numpy_function_is_refused(tmp_path, tf):
    import keras

    marker = tmp_path / "python-ran"

    def run(v):
        marker.write_text("ran")
        return v

    class Numpy(keras.layers.Layer):
        def call(self, x):
            y = tf.numpy_function(run, [x], tf.float32)
            y.set_shape(x.shape)
            return y

    inp = keras.Input((4,), name="image")
    model = keras.Model(inp, Numpy(name="numpy")(inp))
    _refused(model, tmp_path / "m", "PyFunc", "The keras model", "the model was not saved")
    assert not marker.exists()


def test_session_with_read_file_is_refused(tmp_path, tf, secret):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        leak = tf.io.read_file(str(secret), name="leak")
        with tf.compat.v1.Session() as sess:
            _refused(sess, tmp_path / "m", "node 'leak' (ReadFile", "the model was not saved",
                     inputs={"x": x}, outputs={"leak": leak})


def test_tf2_saved_model_reading_a_file_is_refused_naming_the_function(tmp_path, tf, secret):
    class Leaky(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="x")])
        def __call__(self, x):
            return {"leak": tf.io.read_file(str(secret), name="leak")}

    tf.saved_model.save(Leaky(), str(tmp_path / "sm"))
    message = _refused(str(tmp_path / "sm"), tmp_path / "m", "(ReadFile", "in function '__inference")
    assert "node 'leak'" in message


def test_checkpoint_meta_graph_with_write_file_initializer_is_refused(tmp_path, tf):
    marker = tmp_path / "written-at-restore"
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.ones((1, 1), np.float32))
        tf.identity(tf.matmul(x, w), name="y")
        write = tf.io.write_file(str(marker), "pwned", name="sneaky_init")
        # checkpoint sources run the table initializers after restoring: hide the write there
        graph.add_to_collection(tf.compat.v1.GraphKeys.TABLE_INITIALIZERS, write)
        with tf.compat.v1.Session() as sess:
            sess.run(w.initializer)
            prefix = tf.compat.v1.train.Saver().save(sess, str(tmp_path / "ckpt" / "model.ckpt"))
    message = _refused(prefix, tmp_path / "m", "node 'sneaky_init' (WriteFile", "model.ckpt.meta",
                       inputs={"x": "x:0"}, outputs={"y": "y:0"})
    assert "save/SaveV2" not in message and "save/RestoreV2" not in message
    assert not marker.exists()


def test_restore_op_reading_another_checkpoint_is_refused(tmp_path, tf):
    """The Saver's RestoreV2 passes only when it reads the prefix the loader feeds."""
    from tensorflow.core.protobuf import saved_model_pb2

    source = _builder_save(tf, tmp_path / "sm", lambda tf, x, w: {"y": tf.identity(w, name="y")})
    pb = os.path.join(source, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(Path(pb).read_bytes())
    graph_def = saved_model.meta_graphs[0].graph_def
    elsewhere = graph_def.node.add(name="elsewhere", op="Const")
    elsewhere.attr["dtype"].type = tf.string.as_datatype_enum
    elsewhere.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(str(tmp_path / "other.ckpt")))
    restore = next(n for n in graph_def.node if n.op == "RestoreV2")
    restore.input[0] = "elsewhere"
    Path(pb).write_bytes(saved_model.SerializeToString())
    _refused(source, tmp_path / "m", f"node {restore.name!r} (RestoreV2: restores from a path other")


def _two_savers_save(tf, export_dir, restore_into_output=False):
    """The EAS guide's TF1 shape: a training Saver in the graph, then simple_save adds its own."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        w = tf.compat.v1.get_variable("w", initializer=np.ones((2, 1), np.float32))
        training_saver = tf.compat.v1.train.Saver()
        y = tf.matmul(x, w, name="y")
        if restore_into_output:
            # The training Saver's RestoreV2 wired into what a request computes.
            restored = graph.get_tensor_by_name(training_saver.saver_def.restore_op_name.replace(
                "restore_all", "RestoreV2") + ":0")
            y = tf.add(y, tf.reduce_sum(restored), name="y_restored")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.saved_model.simple_save(sess, str(export_dir), {"x": x}, {"y": y})
    return str(export_dir)


def test_a_second_saver_no_request_reaches_converts(tmp_path, tf):
    source = _two_savers_save(tf, tmp_path / "sm")
    mes.save_model(source, tmp_path / "m")
    y = mes.load_model(str(tmp_path / "m"), device="cpu").predict({"x": np.ones((1, 2), np.float32)})
    np.testing.assert_allclose(y["y"], [[2.0]])


def test_a_second_savers_restore_on_the_request_path_is_refused(tmp_path, tf):
    source = _two_savers_save(tf, tmp_path / "sm", restore_into_output=True)
    _refused(source, tmp_path / "m", "node 'save/RestoreV2' (RestoreV2: file system or network)")


def test_print_to_a_file_is_refused_print_to_stderr_is_not(tmp_path, tf):
    def make(stream):
        def build(tf, x, w):
            printed = tf.print(w, output_stream=stream, name="printed")
            with tf.control_dependencies([printed]):
                return {"y": tf.identity(w, name="y")}
        return build

    to_file = _builder_save(tf, tmp_path / "to_file", make(f"file://{tmp_path / 'log.txt'}"))
    _refused(to_file, tmp_path / "m", "node 'printed' (PrintV2: prints to file://")
    assert not (tmp_path / "log.txt").exists()
    to_stderr = _builder_save(tf, tmp_path / "to_stderr", make(sys.stderr))
    mes.save_model(to_stderr, tmp_path / "m")


def test_legitimate_saver_and_vocabulary_tables_still_convert(tmp_path, tf):
    """The Saver's own ops and asset-backed tables (TF1 Builder and TF2) pass the policy."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")

    class Lookup(tf.Module):
        def __init__(self):
            init = tf.lookup.TextFileInitializer(str(vocab), tf.string, -2, tf.int64, -1)
            self.table = tf.lookup.StaticHashTable(init, -1)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="x")])
        def __call__(self, x):
            return {"ids": self.table.lookup(x)}

    tf.saved_model.save(Lookup(), str(tmp_path / "tf2"))
    vocab.unlink()
    mes.save_model(str(tmp_path / "tf2"), tmp_path / "m")
    ids = mes.load_model(str(tmp_path / "m"), device="cpu").predict({"x": np.array(["b", "c", "a"], object)})
    np.testing.assert_array_equal(ids["ids"], [1, -1, 0])


def _carried_registries():
    ops = {}
    for version in runtimes.RUNTIME_VERSIONS:
        ops.update(runtimes.load_registry(version)["ops"])
    return ops


def test_the_committed_op_lists_are_what_the_rule_derives_from_the_registries(tf):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import dump_op_registry
    finally:
        sys.path.remove(str(REPO / "scripts"))
    ops = _carried_registries()
    ops.update(dump_op_registry.dump()["ops"])  # TF 2.21: what a source's graph is built with
    file_ops, python_ops = ops_policy.derive_file_ops(ops)
    assert sorted(ops_policy.FILE_OPS) == sorted(file_ops)
    assert ops_policy.PYTHON_OPS == python_ops
    # The ops the issue names are among them.
    assert {"ReadFile", "WriteFile", "MatchingFiles", "SaveV2", "RestoreV2", "ImmutableConst",
            "TFRecordReaderV2", "DebugIdentity", "InitializeTableFromTextFileV2"} <= file_ops
    assert python_ops == {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    # Ordinary ops are not: the rule is about file and network arguments, not names alone.
    assert not {"MatMul", "RegexReplace", "StringJoin", "HashTableV2", "Print"} & file_ops


def test_reference_registry_2_21_has_no_file_op_the_rule_misses():
    """ops-tf2.21.txt (attrs only) agrees: every op with a file attr is in the list."""
    reference = REPO.parent / "shared" / "reference" / "eas-runtimes" / "ops-tf2.21.txt"
    if not reference.exists():
        pytest.skip(f"{reference} is not in this checkout")
    names = set()
    for line in reference.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, attrs = line.partition(" ")
            attr_names = {a.split("=")[0] for a in attrs.split(",") if a}
            if ops_policy.FILE_ARG_NAMES & attr_names:
                names.add(name)
    assert names <= ops_policy.FILE_OPS
