"""Existing SavedModel folders as sources: TF1 (Builder, simple_save, .pbtxt, assets), TF2, Estimator.

The round trips are rows of ``SAVED_MODEL_CASES``, run by one generic test through
``tests/support/round_trips.py``; the bad-input tests assert the messages and that nothing is left on disk.
"""

import contextlib
import os
import shutil

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from support.round_trips import Case, Export, Predict, PyfuncPredict, TensorRun, params, run

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import runtimes

W = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0).astype(np.float32)
WORDS = ["red", "green", "blue"]


def _graph_def(saved_model_dir):
    from mlflow_eas_savedmodel.sources.saved_model import read_saved_model

    return read_saved_model(str(saved_model_dir)).meta_graphs[0].graph_def


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


LOOKUP_WORDS = np.array(["blue", "black", "red"], dtype=object)


@contextlib.contextmanager
def _tf1_builder_export(tf, tmp_path, builder_export, x4):
    # The folder as TF 2.21 wrote it would not load on EAS: that is why it is re-exported.
    _, problems = runtimes.check_all(_graph_def(builder_export))
    assert any("VarHandleOp" in p.op or "grad_a" in p.reason for p in problems["1.15"])
    yield Export(
        builder_export,
        {"default_signature": "predict_images"},
        predicts=[Predict(x4, {"scores": _scores(x4)}, rtol=1e-5)],
        pyfunc=[PyfuncPredict({"words": LOOKUP_WORDS}, [2, -1, 0], signature="lookup")],
        tensor_runs=[TensorRun("ids:0", {"words:0": LOOKUP_WORDS}, [2, -1, 0])],
    )


@contextlib.contextmanager
def _pbtxt_folder(tf, tmp_path, x4):
    pbtxt_dir = str(tmp_path / "pbtxt")
    _write_with_builder(tf, pbtxt_dir, as_text=True)
    assert os.path.exists(os.path.join(pbtxt_dir, "saved_model.pbtxt"))
    yield Export(pbtxt_dir, predicts=[Predict(x4, {"scores": _scores(x4)}, signature="predict_images", rtol=1e-5)])


@contextlib.contextmanager
def _simple_save_folder(tf, tmp_path, x4):
    simple_dir = str(tmp_path / "simple")
    graph = tf.Graph()
    with graph.as_default():
        x, y, _, _ = _build_tf1_graph(tf)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.saved_model.simple_save(sess, simple_dir, inputs={"image": x}, outputs={"scores": y})
    yield Export(simple_dir, predicts=[Predict(x4, {"scores": _scores(x4)}, rtol=1e-5)])


@contextlib.contextmanager
def _vocabulary_asset(tf, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    export_dir = str(tmp_path / "with_assets")
    _write_with_builder(tf, export_dir, vocab_file=str(vocab))
    vocab.unlink()  # only the SavedModel's assets/ copy is left
    assert os.listdir(os.path.join(export_dir, "assets")) == ["vocab.txt"]
    yield Export(
        export_dir,
        predicts=[Predict(np.array(["green", "pink"], object), {"ids": [1, -1]}, signature="lookup")],
        after_save=lambda: shutil.rmtree(export_dir),  # and EAS will not have that either
    )


@contextlib.contextmanager
def _tf2_module_signatures(tf, tmp_path, tf2_export, x4):
    _, problems = runtimes.check_all(_graph_def(tf2_export))
    assert problems["1.15"], "the TF2-style original should not load on EAS"
    offset = np.full_like(x4, 0.5)

    def checks(conf, saved_model_dir, handle):
        assert _variables(saved_model_dir, tf) == ["w"]  # one VariableV2 for both signatures reading w

    yield Export(
        tf2_export,
        predicts=[
            Predict({"x": x4, "a_offset": offset}, {"scores": (x4 + offset) @ W, "total": x4.sum(axis=1)}, rtol=1e-5),
            Predict(x4, {"output_0": x4 @ W}, signature="raw", rtol=1e-5),
        ],
        pyfunc=[PyfuncPredict({"words": np.array(["blue", "nope"], dtype=object)}, [7, -1], signature="lookup")],
        checks=checks,
    )


@contextlib.contextmanager
def _keras_export_folder(tf, tmp_path, mlp, x4):
    export_dir = str(tmp_path / "keras_export")
    mlp.export(export_dir, verbose=False)
    yield Export(
        export_dir, {"input_example": x4[:2]}, predicts=[Predict(x4, {None: mlp(x4).numpy()}, rtol=1e-5, atol=1e-6)]
    )

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
    from support.estimator_models import build_estimator_saved_model

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
ESTIMATOR_INPUTS = {name: "examples" if name == "predict" else "inputs" for name in ESTIMATOR_SIGNATURES}


@pytest.fixture(scope="module")
def feature_column_export(tmp_path_factory, tf):
    from support.estimator_models import build_feature_column_saved_model

    return build_feature_column_saved_model(tf, str(tmp_path_factory.mktemp("feature_columns") / "export"))


FEATURE_COLUMN_SIGNATURES = {"serving_default": "inputs", "regression": "inputs", "predict": "examples"}
# The SelectV2 of the vocabulary lookup has an input of unknown rank: broadcast at run time.
FEATURE_COLUMN_PROCESSORS = list(runtimes.PROCESSORS)


@pytest.mark.runtime
def test_feature_column_dnn_runs_where_claimed(tmp_path, tf, feature_column_export):
    """The claim is evidence: 1.12 (SelectV2 of unknown rank rewritten), 1.15 and 2.3 run all
    three SignatureDefs."""
    from support.estimator_models import feature_column_examples

    path = str(tmp_path / "m")
    mes.save_model(feature_column_export, path)
    examples = feature_column_examples(tf)
    for processor in ("tensorflow_cpu_1.12", "tensorflow_cpu_1.15", "tensorflow_cpu_2.3"):
        claimed = mes.check_runtime(path, processor, inputs=examples, timeout=600)
        assert claimed.ok, claimed.format()
        assert claimed.runtimes[0].claimed
        assert {s.name for s in claimed.runtimes[0].signatures} == set(FEATURE_COLUMN_SIGNATURES)


@contextlib.contextmanager
def _zero_input_signature_defs(tf, tmp_path):
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
    yield Export(str(tmp_path / "sm"), predicts=[Predict({}, {"version": [2.0, 4.0]}, signature="model_version")])


def _estimator_export(key):
    @contextlib.contextmanager
    def build(tf, tmp_path, estimator_exports):
        from support.estimator_models import original_outputs, serialized_examples

        export = estimator_exports[key]
        # The GPU pins of the original are gone from the export (devices_cleared): EAS's CPU
        # processors could not place them.
        assert any(n.device for n in _graph_def(export).node)
        examples = serialized_examples(tf, np.random.default_rng(1).random((4, 3)), ["red", "blue", "pink", "green"])
        yield Export(export, predicts=[
            Predict({ESTIMATOR_INPUTS[name]: examples}, original_outputs(tf, export, name, examples), signature=name,
                    complete=True)
            for name in ESTIMATOR_SIGNATURES
        ])

    return build


@contextlib.contextmanager
def _feature_column_dnn(tf, tmp_path, feature_column_export):
    from support.estimator_models import feature_column_examples, original_outputs

    examples = feature_column_examples(tf)
    yield Export(feature_column_export, predicts=[
        Predict({input_key: examples}, original_outputs(tf, feature_column_export, name, examples), signature=name,
                complete=True)
        for name, input_key in FEATURE_COLUMN_SIGNATURES.items()
    ])


RESOURCE_NOTE = "resource variables -> VariableV2"


def _estimator_case(name, key, notes=()):
    return Case(
        name,
        _estimator_export(key),
        fixtures=("estimator_exports",),
        signatures=sorted(ESTIMATOR_SIGNATURES),
        conf={
            **{("signature_defs", n, "method_name"): m for n, m in ESTIMATOR_SIGNATURES.items()},
            ("eas_processors",): list(runtimes.PROCESSORS),  # ParseExampleV2 rewritten for 1.x
            ("signature_defs", "predict", "inputs", "examples", "dtype"): "string",
        },
        conf_keys={("signature_defs", n, "inputs"): [k] for n, k in ESTIMATOR_INPUTS.items()},
        notes=notes,
        verified=True,
        devices_cleared=True,
    )


SAVED_MODEL_CASES = [
    Case(
        "tf1_builder_export_is_reexported_and_keeps_its_signature_defs",
        _tf1_builder_export,
        fixtures=("builder_export", "x4"),
        log=True,
        signatures=["lookup", "predict_images"],
        default_signature="predict_images",
        conf={
            ("signature_defs", "lookup", "method_name"): "tensorflow/serving/classify",
            ("signature_defs", "predict_images", "inputs", "images", "name"): "x:0",
        },
        conf_keys={("signature_defs", "lookup", "inputs"): ["words"]},
        first_note_prefix="re-exported TF1 SavedModel",
        notes=(RESOURCE_NOTE,),
    ),
    Case(
        "pbtxt_folder",
        _pbtxt_folder,
        fixtures=("x4",),
        default_signature="lookup",  # no serving_default: the first by name
    ),
    Case("simple_save_folder", _simple_save_folder, fixtures=("x4",), signatures=["serving_default"]),
    Case(
        "vocabulary_asset_is_carried_into_the_graph",
        _vocabulary_asset,
        note_prefixes=("vocabulary-file tables",),
    ),
    Case(
        "tf2_module_signatures_are_merged_and_share_weights",
        _tf2_module_signatures,
        fixtures=("tf2_export", "x4"),
        log=True,
        signatures=["lookup", "raw", "serving_default"],
        conf_keys={
            ("signature_defs", "serving_default", "inputs"): ["a_offset", "x"],
            ("signature_defs", "serving_default", "outputs"): ["scores", "total"],
        },
        first_note_prefix="re-exported TF2 SavedModel",
    ),
    Case("keras_export_folder", _keras_export_folder, fixtures=("mlp", "x4"), input_example_saved=True),
    _estimator_case("estimator_ParseExample_legacy_init_op", (False, "legacy_init_op")),
    _estimator_case(
        "estimator_ParseExampleV2_main_op", (True, "main_op"),
        notes=("ParseExampleV2 rewritten for TF 1.12: 1 as ParseExample",),
    ),
    Case(
        "feature_column_dnn_answers_exactly_and_claims_1_12_on",
        _feature_column_dnn,
        fixtures=("feature_column_export",),
        # embedding_lookup_sparse's int64 segment ids (TF 2.3+) are cast to int32 for 1.x.
        notes=(
            "SelectV2 rewritten for TF 1.12: 1 with inputs broadcast at run time (unknown rank)",
            "SparseSegmentMean rewritten for TF 1.12: 1 on int32 segment ids",
            "SparseSegmentSqrtN rewritten for TF 1.12: 1 on int32 segment ids",
        ),
        conf={
            ("eas_processors",): FEATURE_COLUMN_PROCESSORS,
            ("eas_incompatibilities",): {},
        },
    ),
    Case(
        "zero_input_signature_defs_are_kept",
        _zero_input_signature_defs,
        conf={("signature_defs", "model_version", "inputs"): {}},
        verified=True,
    ),
]


@pytest.mark.parametrize("case", params(SAVED_MODEL_CASES))
def test_saved_model_round_trip(case, request, tmp_path, tf):
    run(case, "saved_model", request, tmp_path, tf)

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
