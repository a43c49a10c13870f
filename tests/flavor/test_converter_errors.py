"""No raw exception leaves the converter: each stage's real failure is an ``MlflowException``.

Every test feeds one stage of the pipeline (trace, freeze, rewrite, write, verify) a model
that really fails there in TensorFlow 2.21, and checks the exception's type, that its message
names the stage and the SignatureDef, and that no folder was left. The other tests are the
refusals of issue 21 that used to name the wrong cause (a missing CPU kernel called "an
incomplete folder", a chunked ``saved_model.cpb`` called "a folder without a 'checkpoint' state
file", "TF 1.12: TF 1.12: node ...") and issue 20's re-bound table file.
"""

import os
import re
import subprocess

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import export
from mlflow_eas_savedmodel.graph.serving_graph import ServingGraph, SignatureSpec


def _refused(tmp_path, model, match, **kwargs):
    target = tmp_path / "model"
    with pytest.raises(MlflowException) as e:
        mes.save_model(model, str(target), **kwargs)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert re.search(match, e.value.message), e.value.message
    assert not target.exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".model")]  # no staging folder left
    return e.value.message


def _stage_message(stage, signature):
    return re.escape(f"The conversion failed at its {stage} stage (") + r"[^)]*\) for " + re.escape(
        f"SignatureDef {signature!r}: "
    )


def test_trace_stage_names_the_signature(tmp_path, tf):
    """A Saver checkpoint whose ``build_fn`` fails in TensorFlow's shape inference."""
    prefix = str(tmp_path / "ckpt" / "model.ckpt")
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf.compat.v1.get_variable("w", initializer=np.ones(2, np.float32))
        sess.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(sess, prefix, write_meta_graph=False)
    message = _refused(
        tmp_path, prefix, _stage_message("trace", "scores") + "ValueError: Cannot reshape a tensor with 3 elements",
        build_fn=lambda: tf.reshape(tf.zeros([3]), [2]), signature_name="scores",
    )
    assert "(reading the model and tracing its functions)" in message
    assert "or pass `input_example=`), and that a SavedModel folder is complete. Nothing was saved." in message


def test_freeze_stage_names_the_signature(tmp_path, tf):
    """A TF2 function reading a ``tf.data`` dataset: its variant tensor cannot become a constant."""
    module = tf.Module()
    dataset = tf.data.Dataset.range(10)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="x")])
    def plus_total(x):
        return {"y": x + dataset.reduce(tf.constant(0, tf.int64), lambda a, b: a + b)}

    module.dataset, module.plus_total = dataset, plus_total
    folder = str(tmp_path / "dataset_module")
    tf.saved_model.save(module, folder, signatures={"with_dataset": plus_total})
    # The ops policy refuses dataset ops first; an owner who opts in reaches the freeze stage.
    _refused(tmp_path, folder, r"allow_ops=\['RangeDataset', 'ReduceDataset'\]")
    message = _refused(
        tmp_path, folder,
        _stage_message("freeze", "with_dataset") + "InvalidArgumentError: Cannot convert a Tensor of dtype variant",
        allow_ops=["RangeDataset", "ReduceDataset"],
    )
    assert "serve a function that reads only variables and tables created outside it. Nothing was saved." in message


def test_rewrite_stage_names_only_the_signature_that_needs_the_node(tmp_path, tf):
    """``VarIsInitializedOp`` on a variable that freezing turned into a constant: the frozen
    graph does not import. Of two signatures, only the one reading it is named."""
    module = tf.Module()
    module.v = tf.Variable([1.0, 2.0])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def scaled(x):
        return {"y": x * module.v[0]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="i")])
    def initialized(i):
        return {"z": tf.raw_ops.VarIsInitializedOp(resource=module.v.handle)}

    module.scaled, module.initialized = scaled, initialized
    folder = str(tmp_path / "two_signatures")
    tf.saved_model.save(module, folder, signatures={"serving_default": scaled, "initialized": initialized})
    message = _refused(
        tmp_path, folder,
        _stage_message("rewrite", "initialized") + "ValueError: Input 0 of node initialized/",
    )
    assert "serving_default" not in message
    assert "This is a conversion bug: report it with the model. Nothing was saved." in message


def test_rewrite_stage_of_a_graph_that_does_not_import_names_the_signature_it_breaks(tmp_path, tf):
    """A ServingGraph whose node ``y`` reads a node that is not there: of the signatures ``a``
    (returns ``y``) and ``b`` (returns ``x``), only ``a`` is named."""
    graph_def = tf.compat.v1.GraphDef()
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        tf.identity(x, name="y")
        graph_def.CopyFrom(graph.as_graph_def())
    graph_def.node[-1].input[0] = "gone:0"
    serving_graph = ServingGraph(
        graph_def=graph_def,
        signatures={"a": SignatureSpec({"x": "x:0"}, {"y": "y:0"}), "b": SignatureSpec({"x": "x:0"}, {"x": "x:0"})},
        default_signature="a",
    )
    target = tmp_path / "savedmodel"
    with pytest.raises(MlflowException, match=re.escape(
        "The conversion failed at its rewrite stage (rewriting the frozen graph for TF 1.12-2.7 and "
        "checking it against their op registries) for SignatureDef 'a': ValueError: Node 'y': "
        "Unknown input node 'gone:0'"
    )):
        export.export(serving_graph, str(target))
    assert not target.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB tmpfs (root only: skipped where mount is not allowed)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_write_stage_names_the_signature_when_saved_model_pb_fills_the_disk(tf, small_disk):
    """No variables (the free-space check has nothing to count) but 200 constants of 60 KiB,
    small enough to stay in the graph: ``saved_model.pb`` (12 MiB) does not fit on 8 MiB."""
    graph = tf.Graph()
    rng = np.random.default_rng(0)
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 15_000], name="x")
        y = tf.identity(tf.add_n([x * tf.constant(rng.random(15_000, np.float32)) for _ in range(200)]), name="y")
    with tf.compat.v1.Session(graph=graph) as sess:
        message = _refused(
            small_disk, sess, _stage_message("write", "serving_default") + "OSError: .*No space left on device",
            inputs={"x": x}, outputs={"y": y}, verify=False,
        )
    assert "Check that the target disk has room for the model and that its folder is writable" in message
    assert os.listdir(small_disk) == []


def test_verify_stage_names_the_signature(tmp_path, tf):
    """A model random by design (unseeded ``RandomUniform``) answers differently from its source."""
    import keras

    class Noise(keras.layers.Layer):
        def call(self, x):
            return x + tf.raw_ops.RandomUniform(shape=tf.shape(x), dtype=tf.float32, seed=0, seed2=0)

    inp = keras.Input((4,), name="image")
    model = keras.Model(inp, Noise()(inp))
    message = _refused(
        tmp_path, model, re.escape("Verification failed: SignatureDef 'serving_default' of the saved model answers differently"),
    )
    assert "save it with verify='static'" in message


def test_missing_cpu_kernel_is_named_not_an_incomplete_folder(tmp_path, tf):
    """A TF1 export whose init op runs ``BoostedTreesEnsembleResourceHandleOp`` (what a TF 1.x
    ``BoostedTreesClassifier`` export holds): TF 2.21 has no CPU kernel for it."""
    folder = str(tmp_path / "boosted")
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        ensemble = tf.raw_ops.BoostedTreesEnsembleResourceHandleOp(container="", shared_name="ensemble")
        create = tf.raw_ops.BoostedTreesCreateEnsemble(
            tree_ensemble_handle=ensemble, stamp_token=0, tree_ensemble_serialized=""
        )
        stamp = tf.raw_ops.BoostedTreesGetEnsembleStates(tree_ensemble_handle=ensemble)[0]
        y = tf.add(tf.cast(stamp, tf.float32), x, name="y")
        with tf.control_dependencies([create]):
            init = tf.no_op(name="legacy_init_op")
        with tf.compat.v1.Session() as sess:
            builder = tf.compat.v1.saved_model.Builder(folder)
            builder.add_meta_graph_and_variables(
                sess, ["serve"], main_op=init, signature_def_map={
                    "serving_default": tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
                },
            )
            builder.save()
    message = _refused(tmp_path, folder, re.escape(
        "its graph runs op 'BoostedTreesEnsembleResourceHandleOp' (node 'BoostedTreesEnsembleResourceHandleOp') "
        f"at load, and TensorFlow {tf.__version__} has no CPU kernel for BoostedTreesEnsembleResourceHandleOp"
    ))
    assert "Deploy the original export to an EAS processor of the TensorFlow version that wrote it" in message
    assert "Check that the folder is complete" not in message


def test_chunked_saved_model_is_refused_as_what_it_is(tmp_path, tf):
    """TF's open-source build can write no ``.cpb`` (so none is built here) and reads none."""
    with pytest.raises(ValueError, match="disabled in OSS"):
        tf.saved_model.SaveOptions(experimental_image_format=True)
    folder = tmp_path / "chunked"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.cpb").write_bytes(b"\x00" * 64)
    (folder / "variables" / "variables.index").write_bytes(b"")
    message = _refused(tmp_path, str(folder), re.escape(
        f"{str(folder)!r} holds saved_model.cpb, a SavedModel in TensorFlow's chunked format "
        "(`tf.saved_model.SaveOptions(experimental_image_format=True)`), without a saved_model.pb."
    ))
    assert f"TensorFlow {tf.__version__}'s open-source build cannot read that format, and no EAS processor loads it" in message
    assert "Save the model again without `experimental_image_format`" in message
    assert "checkpoint" not in message


def test_per_runtime_problems_say_their_runtime_once(tmp_path, tf):
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def totals(x):
        return {"t": tf.raw_ops.SegmentSumV2(data=x, segment_ids=tf.zeros(tf.shape(x)[:1], tf.int32), num_segments=1)}

    module.totals = totals
    folder = str(tmp_path / "segment_sum")
    tf.saved_model.save(module, folder, signatures={"serving_default": totals})
    message = _refused(tmp_path, folder, re.escape("No EAS TensorFlow processor (TF 1.12-2.7) can run this model:\n  TF 1.12: node '"))
    for version in ("1.12", "1.14", "1.15", "2.3", "2.4", "2.7"):
        assert f"\n  TF {version}: node '" in message
        assert f"TF {version}: TF {version}" not in message


def test_table_file_rebound_to_a_saved_constant_is_refused(tmp_path, tf):
    """Issue 20: the initializer's file argument re-bound from its Asset to a SavedConstant
    naming an outside file. TF's own loader then reads that file (checked here first); the
    conversion must refuse before anything runs."""
    from tensorflow.core.protobuf import saved_model_pb2

    outside = tmp_path / "outside.txt"
    outside.write_text("secret-1\nsecret-2\n")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")
    module = tf.Module()
    module.table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
        str(vocab), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER
    ), -1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
    def ids(words):
        return {"ids": module.table.lookup(words)}

    module.ids = ids
    folder = str(tmp_path / "rebound")
    tf.saved_model.save(module, folder, signatures={"serving_default": ids})
    pb = os.path.join(folder, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        saved.ParseFromString(f.read())
    meta_graph = saved.meta_graphs[0]
    objects = meta_graph.object_graph_def
    const = meta_graph.graph_def.node.add(name="outside_path", op="Const")
    const.attr["dtype"].type = tf.string.as_datatype_enum
    const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(str(outside)))
    objects.nodes.add().constant.operation = "outside_path"
    rebound = 0
    for function in objects.concrete_functions.values():
        for i, node_id in enumerate(function.bound_inputs):
            if objects.nodes[node_id].WhichOneof("kind") == "asset":
                function.bound_inputs[i] = len(objects.nodes) - 1
                rebound += 1
    assert rebound == 1
    with open(pb, "wb") as f:
        f.write(saved.SerializeToString())
    # The attack is real: TensorFlow's loader fills the table from the outside file.
    loaded = tf.saved_model.load(folder)
    assert loaded.signatures["serving_default"](words=tf.constant(["secret-2"]))["ids"].numpy().tolist() == [1]
    del loaded
    message = _refused(tmp_path, folder, re.escape(
        "fills a lookup table from a file that is not one of its assets; nothing of it was run:\n  "
        "InitializeTableFromTextFileV2 'text_file_init/InitializeTableFromTextFileV2' in function '"
    ))
    assert "its file name is bound to a constant ('outside_path'), not to an asset of the folder" in message
    assert "A vocabulary file must be an asset (assets/ of the folder)" in message
