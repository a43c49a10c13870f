"""Existing SavedModel folders as sources: TF1 (Builder, simple_save, .pbtxt, assets) and TF2."""

import os
import shutil

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import runtimes

W = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0).astype(np.float32)
WORDS = ["red", "green", "blue"]


def _graph_def(saved_model_dir):
    from mlflow_eas_savedmodel.sources.saved_model import read_saved_model

    return read_saved_model(str(saved_model_dir)).meta_graphs[0].graph_def


def _flavor(path):
    with open(os.path.join(path, "MLmodel")) as f:
        return yaml.safe_load(f)["flavors"][mes.FLAVOR_NAME]


def _variables(saved_model_dir, tf):
    return sorted(name for name, _ in tf.train.list_variables(os.path.join(saved_model_dir, "variables", "variables")))


def _build_tf1_graph(tf, vocab_file=None):
    x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
    w = tf.compat.v1.get_variable("w", initializer=W)  # resource variable, TF2's default
    y = tf.nn.softmax(tf.matmul(x, w), name="y")
    words = tf.compat.v1.placeholder(tf.string, [None], name="words")
    if vocab_file is None:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(WORDS), tf.constant([0, 1, 2], tf.int64)), -1
        )
    else:
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                vocab_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            -1,
        )
    ids = tf.identity(table.lookup(words), name="ids")
    return x, y, words, ids


def _write_with_builder(tf, export_dir, as_text=False, vocab_file=None):
    """The guide's SavedModelBuilder recipe, as written (no strip_default_attrs)."""
    graph = tf.Graph()
    with graph.as_default():
        x, y, words, ids = _build_tf1_graph(tf, vocab_file)
        info = tf.compat.v1.saved_model.utils.build_tensor_info
        build = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
        signature_def_map = {
            "predict_images": build({"images": info(x)}, {"scores": info(y)}, "tensorflow/serving/predict"),
            "lookup": build({"words": info(words)}, {"ids": info(ids)}, "tensorflow/serving/classify"),
        }
        legacy_init_op = tf.group(tf.compat.v1.tables_initializer(), name="legacy_init_op")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map=signature_def_map, legacy_init_op=legacy_init_op,
                assets_collection=graph.get_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS) or None,
            )
            builder.save(as_text=as_text)


def _scores(x):
    logits = x @ W
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def builder_export(tmp_path_factory, tf):
    export_dir = str(tmp_path_factory.mktemp("builder") / "export_dir")
    _write_with_builder(tf, export_dir)
    return export_dir


def test_tf1_builder_export_is_reexported_and_keeps_its_signature_defs(tracking_uri, builder_export, x4, tf):
    # The folder as TF 2.21 wrote it would not load on EAS: that is why it is re-exported.
    _, problems = runtimes.check_all(_graph_def(builder_export))
    assert any("VarHandleOp" in p.op or "grad_a" in p.reason for p in problems["1.15"])

    with mlflow.start_run():
        info = mes.log_model(builder_export, name="m", default_signature="predict_images")
    local = mlflow.artifacts.download_artifacts(info.model_uri)
    conf = _flavor(local)
    assert conf["source"] == "saved_model"
    assert sorted(conf["signature_defs"]) == ["lookup", "predict_images"]
    assert conf["signature_defs"]["lookup"]["method_name"] == "tensorflow/serving/classify"
    assert list(conf["signature_defs"]["lookup"]["inputs"]) == ["words"]
    assert conf["signature_defs"]["predict_images"]["inputs"]["images"]["name"] == "x:0"
    assert conf["conversion_notes"][0].startswith("re-exported TF1 SavedModel")
    assert "resource variables -> VariableV2" in conf["conversion_notes"]
    saved_model_dir = os.path.join(local, "savedmodel")
    compatible, problems = runtimes.check_all(_graph_def(saved_model_dir))
    assert {"tensorflow_cpu_1.15", "tensorflow_cpu_2.3"} <= set(compatible), problems

    handle = mes.load_model(info.model_uri, device="cpu")
    np.testing.assert_allclose(handle.predict(x4)["scores"], _scores(x4), rtol=1e-5)
    words = np.array(["blue", "black", "red"], dtype=object)
    pyfunc_model = mlflow.pyfunc.load_model(info.model_uri)
    np.testing.assert_array_equal(pyfunc_model.predict({"words": words}, params={"signature_name": "lookup"}), [2, -1, 0])
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        tf.compat.v1.saved_model.loader.load(sess, ["serve"], saved_model_dir)
        np.testing.assert_array_equal(sess.run("ids:0", {"words:0": words}), [2, -1, 0])


def test_pbtxt_and_simple_save_folders(tmp_path, tf, x4):
    pbtxt_dir = str(tmp_path / "pbtxt")
    _write_with_builder(tf, pbtxt_dir, as_text=True)
    assert os.path.exists(os.path.join(pbtxt_dir, "saved_model.pbtxt"))
    mes.save_model(pbtxt_dir, tmp_path / "from_pbtxt")
    handle = mes.load_model(str(tmp_path / "from_pbtxt"), device="cpu")
    assert handle.default_signature == "lookup"  # no serving_default: the first by name
    np.testing.assert_allclose(handle.predict(x4, signature_name="predict_images")["scores"], _scores(x4), rtol=1e-5)

    simple_dir = str(tmp_path / "simple")
    graph = tf.Graph()
    with graph.as_default():
        x, y, _, _ = _build_tf1_graph(tf)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.saved_model.simple_save(sess, simple_dir, inputs={"image": x}, outputs={"scores": y})
    mes.save_model(simple_dir, tmp_path / "from_simple")
    handle = mes.load_model(str(tmp_path / "from_simple"), device="cpu")
    assert list(handle.signatures) == ["serving_default"]
    np.testing.assert_allclose(handle.predict(x4)["scores"], _scores(x4), rtol=1e-5)


def test_vocabulary_asset_is_carried_into_the_graph(tmp_path, tf):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    export_dir = str(tmp_path / "with_assets")
    _write_with_builder(tf, export_dir, vocab_file=str(vocab))
    vocab.unlink()  # only the SavedModel's assets/ copy is left
    assert os.listdir(os.path.join(export_dir, "assets")) == ["vocab.txt"]
    mes.save_model(export_dir, tmp_path / "m")
    shutil.rmtree(export_dir)  # and EAS will not have that either
    handle = mes.load_model(str(tmp_path / "m"), device="cpu")
    ids = handle.predict(np.array(["green", "pink"], object), signature_name="lookup")["ids"]
    np.testing.assert_array_equal(ids, [1, -1])
    assert any(n.startswith("vocabulary-file tables") for n in _flavor(tmp_path / "m")["conversion_notes"])


class _Module:
    @staticmethod
    def make(tf):
        class Served(tf.Module):
            def __init__(self):
                super().__init__()
                self.w = tf.Variable(W, name="w")
                self.table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(tf.constant(WORDS), tf.constant([5, 6, 7], tf.int64)), -1
                )

            @tf.function(input_signature=[
                tf.TensorSpec([None, 4], tf.float32, name="x"),
                tf.TensorSpec([None, 4], tf.float32, name="a_offset"),
            ])
            def predict(self, x, a_offset):
                return {"scores": tf.matmul(x + a_offset, self.w), "total": tf.reduce_sum(x, axis=1)}

            @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
            def raw(self, x):
                return tf.matmul(x, self.w)

            @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
            def lookup(self, words):
                return {"ids": self.table.lookup(words)}

        return Served()


@pytest.fixture(scope="module")
def tf2_export(tmp_path_factory, tf):
    module = _Module.make(tf)
    export_dir = str(tmp_path_factory.mktemp("tf2") / "export_dir")
    tf.saved_model.save(
        module, export_dir, signatures={"serving_default": module.predict, "raw": module.raw, "lookup": module.lookup}
    )
    return export_dir


def test_tf2_module_signatures_are_merged_and_share_weights(tracking_uri, tf2_export, x4, tf):
    _, problems = runtimes.check_all(_graph_def(tf2_export))
    assert problems["1.15"], "the TF2-style original should not load on EAS"

    with mlflow.start_run():
        info = mes.log_model(tf2_export, name="m")
    local = mlflow.artifacts.download_artifacts(info.model_uri)
    conf = _flavor(local)
    assert sorted(conf["signature_defs"]) == ["lookup", "raw", "serving_default"]
    assert sorted(conf["signature_defs"]["serving_default"]["inputs"]) == ["a_offset", "x"]
    assert sorted(conf["signature_defs"]["serving_default"]["outputs"]) == ["scores", "total"]
    assert conf["conversion_notes"][0].startswith("re-exported TF2 SavedModel")
    saved_model_dir = os.path.join(local, "savedmodel")
    assert _variables(saved_model_dir, tf) == ["w"]  # one VariableV2 for both signatures reading w
    compatible, problems = runtimes.check_all(_graph_def(saved_model_dir))
    assert {"tensorflow_cpu_1.15", "tensorflow_cpu_2.3"} <= set(compatible), problems

    offset = np.full_like(x4, 0.5)
    handle = mes.load_model(info.model_uri, device="cpu")
    result = handle.predict({"x": x4, "a_offset": offset})
    np.testing.assert_allclose(result["scores"], (x4 + offset) @ W, rtol=1e-5)
    np.testing.assert_allclose(result["total"], x4.sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(handle.predict(x4, signature_name="raw")["output_0"], x4 @ W, rtol=1e-5)
    pyfunc_model = mlflow.pyfunc.load_model(info.model_uri)
    words = np.array(["blue", "nope"], dtype=object)
    np.testing.assert_array_equal(pyfunc_model.predict({"words": words}, params={"signature_name": "lookup"}), [7, -1])


def test_keras_export_folder(tmp_path, mlp, x4):
    export_dir = str(tmp_path / "keras_export")
    mlp.export(export_dir, verbose=False)
    mes.save_model(export_dir, tmp_path / "m", input_example=x4[:2])
    assert os.path.exists(tmp_path / "m" / "input_example.json")
    handle = mes.load_model(str(tmp_path / "m"), device="cpu")
    (output_key,) = handle.signatures["serving_default"]["outputs"]
    np.testing.assert_allclose(handle.predict(x4)[output_key], mlp(x4).numpy(), rtol=1e-5, atol=1e-6)


def test_folder_without_signatures(tmp_path, tf):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    export_dir = str(tmp_path / "nosig")
    tf.saved_model.save(module, export_dir)
    with pytest.raises(MlflowException, match=r"has no SignatureDefs, so nothing could call it on EAS"):
        mes.save_model(export_dir, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_damaged_saved_model_pb(tmp_path):
    export_dir = tmp_path / "broken"
    export_dir.mkdir()
    (export_dir / "saved_model.pb").write_bytes(b"\x00not a protobuf\xff" * 3)
    with pytest.raises(MlflowException, match=r"Cannot read '.*broken/saved_model\.pb': .*The file is damaged; export the model again"):
        mes.save_model(str(export_dir), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_unknown_default_signature(tmp_path, tf2_export):
    with pytest.raises(MlflowException, match=r"`default_signature='nope'` is not one of the signatures \['lookup', 'raw', 'serving_default'\]"):
        mes.save_model(tf2_export, tmp_path / "m", default_signature="nope")
    assert not (tmp_path / "m").exists()


def test_options_a_saved_model_does_not_take(tmp_path, tf2_export):
    with pytest.raises(MlflowException, match=r"`inputs=` cannot be used with a saved_model source"):
        mes.save_model(tf2_export, tmp_path / "m", inputs={"x": "x:0"})


# --------------------------------------------------------------------------- Estimator era


@pytest.fixture(scope="module")
def estimator_exports(tmp_path_factory, tf):
    """``{(parse_v2, init): SavedModel folder}`` as Estimator's export_saved_model wrote them."""
    from estimator_models import build_estimator_saved_model

    exports = {}
    for parse_v2, init in ((False, "legacy_init_op"), (True, "main_op")):
        parent = tmp_path_factory.mktemp(f"estimator_{parse_v2}_{init}")
        exports[(parse_v2, init)] = build_estimator_saved_model(tf, str(parent / "export"), parse_v2, init)
    return exports


ESTIMATOR_SIGNATURES = {
    "classification": "tensorflow/serving/classify",
    "predict": "tensorflow/serving/predict",
    "serving_default": "tensorflow/serving/classify",
    "tensorflow/serving/regress": "tensorflow/serving/regress",
}


@pytest.mark.parametrize("key", [(False, "legacy_init_op"), (True, "main_op")], ids=["ParseExample-legacy_init_op", "ParseExampleV2-main_op"])
def test_estimator_export_answers_exactly_like_the_original(tmp_path, tf, estimator_exports, key):
    from estimator_models import original_outputs, serialized_examples

    export = estimator_exports[key]
    path = str(tmp_path / "m")
    mes.save_model(export, path)
    conf = _flavor(path)
    assert {n: s["method_name"] for n, s in conf["signature_defs"].items()} == ESTIMATOR_SIGNATURES
    assert conf["eas_processors"] == list(runtimes.PROCESSORS)  # ParseExampleV2 rewritten for 1.x
    assert (key[0] and "ParseExampleV2 rewritten for TF 1.12: 1 as ParseExample" in conf["conversion_notes"]) or not key[0]
    assert conf["signature_defs"]["predict"]["inputs"]["examples"]["dtype"] == "string"
    run = conf["verification"]["run"]["signatures"]
    assert {r["result"] for r in run.values()} == {"matches the source"}
    examples = serialized_examples(tf, np.random.default_rng(1).random((4, 3)), ["red", "blue", "pink", "green"])
    handle = mes.load_model(path, device="cpu")
    try:
        for name in ESTIMATOR_SIGNATURES:
            (input_key,) = conf["signature_defs"][name]["inputs"]
            actual = handle.predict({input_key: examples}, signature_name=name)
            expected = original_outputs(tf, export, name, examples)
            assert set(actual) == set(expected)
            for k in expected:
                np.testing.assert_array_equal(actual[k], expected[k], err_msg=f"{name}/{k}")
    finally:
        handle.close()
    # The GPU pins of the original are gone: EAS's CPU processors could not place them.
    assert not any(n.device for n in _graph_def(os.path.join(path, "savedmodel")).node)
    assert any(n.device for n in _graph_def(export).node)


@pytest.fixture(scope="module")
def feature_column_export(tmp_path_factory, tf):
    from estimator_models import build_feature_column_saved_model

    return build_feature_column_saved_model(tf, str(tmp_path_factory.mktemp("feature_columns") / "export"))


FEATURE_COLUMN_SIGNATURES = {"serving_default": "inputs", "regression": "inputs", "predict": "examples"}
# The SelectV2 of the vocabulary lookup has an input of unknown rank: no exact 1.12 rewrite.
FEATURE_COLUMN_PROCESSORS = [p for p in runtimes.PROCESSORS if runtimes.processor_version(p) != "1.12"]


def test_feature_column_dnn_export_answers_exactly_and_claims_1_14_on(tmp_path, tf, feature_column_export):
    from estimator_models import feature_column_examples, original_outputs

    path = str(tmp_path / "m")
    mes.save_model(feature_column_export, path)
    conf = _flavor(path)
    # embedding_lookup_sparse's int64 segment ids (TF 2.3+) are cast to int32 for 1.x.
    assert "SparseSegmentMean rewritten for TF 1.12: 1 on int32 segment ids" in conf["conversion_notes"]
    assert "SparseSegmentSqrtN rewritten for TF 1.12: 1 on int32 segment ids" in conf["conversion_notes"]
    assert conf["eas_processors"] == FEATURE_COLUMN_PROCESSORS
    assert conf["eas_incompatibilities"] == {"1.12": ["op SelectV2 does not exist in TF 1.12"]}
    examples = feature_column_examples(tf)
    handle = mes.load_model(path, device="cpu")
    try:
        for name, input_key in FEATURE_COLUMN_SIGNATURES.items():
            actual = handle.predict({input_key: examples}, signature_name=name)
            expected = original_outputs(tf, feature_column_export, name, examples)
            assert set(actual) == set(expected)
            for k in expected:
                np.testing.assert_array_equal(actual[k], expected[k], err_msg=f"{name}/{k}")
    finally:
        handle.close()


@pytest.mark.runtime
def test_feature_column_dnn_runs_where_claimed_and_is_refused_where_not(tmp_path, tf, feature_column_export):
    """The claim is evidence: 1.15 and 2.3 run all three SignatureDefs, 1.12 (not claimed) refuses."""
    from estimator_models import feature_column_examples

    path = str(tmp_path / "m")
    mes.save_model(feature_column_export, path)
    examples = feature_column_examples(tf)
    for processor in ("tensorflow_cpu_1.15", "tensorflow_cpu_2.3"):
        claimed = mes.check_runtime(path, processor, inputs=examples, timeout=600)
        assert claimed.ok, claimed.format()
        assert {s.name for s in claimed.runtimes[0].signatures} == set(FEATURE_COLUMN_SIGNATURES)
    (result,) = mes.check_runtime(path, "tensorflow_cpu_1.12", inputs=examples, timeout=600).runtimes
    assert not result.claimed and result.verdict == "refused to load"
    assert "Op type not registered 'SelectV2'" in result.c_api_error


def test_zero_input_signature_defs_are_kept(tmp_path, tf):
    g = tf.Graph()
    with g.as_default():
        c = tf.compat.v1.get_variable("c", initializer=np.array([1.0, 2.0], np.float32), use_resource=False)
        version = tf.identity(c * 2, name="version")
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        y = tf.identity(x + c, name="y")
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(tmp_path / "sm"))
            info = tf.compat.v1.saved_model.build_tensor_info
            builder.add_meta_graph_and_variables(sess, ["serve"], {
                "model_version": tf.compat.v1.saved_model.build_signature_def(
                    {}, {"version": info(version)}, "tensorflow/serving/predict"),
                "serving_default": tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y}),
            })
            builder.save()
    mes.save_model(str(tmp_path / "sm"), str(tmp_path / "m"))
    conf = _flavor(str(tmp_path / "m"))
    assert conf["signature_defs"]["model_version"]["inputs"] == {}
    assert conf["verification"]["run"]["signatures"]["model_version"]["result"] == "matches the source"
    handle = mes.load_model(str(tmp_path / "m"), device="cpu")
    try:
        np.testing.assert_array_equal(handle.predict({}, signature_name="model_version")["version"], [2.0, 4.0])
    finally:
        handle.close()


def test_a_stateful_serving_graph_is_refused_naming_the_op(tmp_path, tf):
    g = tf.Graph()
    with g.as_default():
        counter = tf.compat.v1.get_variable("counter", initializer=np.zeros([1], np.float32), use_resource=False)
        x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
        y = tf.identity(x + tf.compat.v1.assign_add(counter, [1.0]), name="y")
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.saved_model.simple_save(sess, str(tmp_path / "sm"), {"x": x}, {"y": y})
    with pytest.raises(MlflowException) as e:
        mes.save_model(str(tmp_path / "sm"), str(tmp_path / "m"))
    assert (
        "Signature 'serving_default' updates a variable on its serving path: node 'AssignAdd' "
        "(AssignAdd) writes 'counter'. Stateful serving graphs are not supported" in e.value.message
    )
    assert not (tmp_path / "m").exists()


def test_an_empty_saved_model_pb_is_called_empty(tmp_path):
    export_dir = tmp_path / "empty"
    export_dir.mkdir()
    (export_dir / "saved_model.pb").write_bytes(b"")
    with pytest.raises(MlflowException, match=r"saved_model\.pb' is empty \(0 bytes\): the export was interrupted"):
        mes.save_model(str(export_dir), tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("version_folder", [True, False])
def test_a_legacy_session_bundle_is_named(tmp_path, version_folder):
    bundle = tmp_path / "bundle" / "00000123"
    bundle.mkdir(parents=True)
    for name in ("export.meta", "export-00000-of-00001", "checkpoint"):
        (bundle / name).write_bytes(b"")
    source = bundle if version_folder else bundle.parent
    with pytest.raises(MlflowException) as e:
        mes.save_model(str(source), tmp_path / "m")
    assert f"{str(bundle)!r} is a legacy SessionBundle export (export.meta + export-*-of-*)" in e.value.message
    assert "import_meta_graph('export.meta')" in e.value.message
    assert not (tmp_path / "m").exists()
