"""TF1 sessions as sources: simple_save and builder semantics, tables, devices, bad input.

The round trips are rows of ``SESSION_CASES``, run by one generic test through
``tests/support/round_trips.py``; the bad-input tests assert the messages and that nothing is left on disk.
"""

import contextlib
import os

import numpy as np
import pytest
from conftest import CI_RUNTIMES
from mlflow.exceptions import MlflowException
from support.round_trips import Case, Export, Predict, PyfuncPredict, TensorRun, params, run

import mlflow_eas_savedmodel as mes

WORDS = ["apple", "banana", "a key longer than twenty-two bytes"]
W = (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0).astype(np.float32)
B = np.array([0.1, -0.2, 0.3], np.float32)


class Tf1Model:
    """A TF1 graph in a live session: ``scores = softmax(image @ w + b)`` and a word table."""

    def __init__(self, tf, use_resource, device=None):
        self.graph = tf.Graph()
        with self.graph.as_default(), tf.device(device):
            self.x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="image")
            w = tf.compat.v1.get_variable("w", initializer=W, use_resource=use_resource)
            b = tf.compat.v1.get_variable("b", initializer=B, use_resource=use_resource)
            self.y = tf.nn.softmax(tf.matmul(self.x, w) + b, name="scores")
            self.words = tf.compat.v1.placeholder(tf.string, [None], name="words")
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(WORDS), tf.constant([10, 20, 30], tf.int64)
                ),
                default_value=-1,
            )
            self.ids = tf.identity(table.lookup(self.words), name="ids")
            self.legacy_init_op = tf.group(tf.compat.v1.tables_initializer(), name="legacy_init_op")
            init = tf.compat.v1.global_variables_initializer()
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
        self.sess = tf.compat.v1.Session(graph=self.graph, config=config)
        self.sess.run([init, self.legacy_init_op])

    def scores(self, x):
        return self.sess.run(self.y, {self.x: x})


@pytest.fixture(scope="module")
def resource_model(tf):
    model = Tf1Model(tf, use_resource=True)
    yield model
    model.sess.close()


@pytest.fixture(scope="module")
def ref_model(tf):
    model = Tf1Model(tf, use_resource=False)
    yield model
    model.sess.close()


@contextlib.contextmanager
def _simple_save_semantics(tf, tmp_path, resource_model, x4):
    model = resource_model
    expected = model.scores(x4)
    yield Export(
        model.sess,
        {"inputs": {"image": model.x}, "outputs": {"scores": model.y}},
        predicts=[Predict(x4, {"scores": expected}, rtol=1e-6)],
        pyfunc=[PyfuncPredict(x4, expected, rtol=1e-6)],
        # What EAS does: the TF1 loader, then a run by the user's own tensor names.
        tensor_runs=[TensorRun("scores:0", {"image:0": x4}, expected, rtol=1e-6)],
    )


LOOKUP_WORDS = np.array([WORDS[2], "cherry", WORDS[0], ""], dtype=object)
LOOKUP_IDS = np.array([30, -1, 10, -1])


@contextlib.contextmanager
def _builder_semantics_with_table(tf, tmp_path, resource_model, x4):
    model = resource_model
    signatures = {
        "predict_images": {"inputs": {"images": model.x}, "outputs": {"scores": model.y}, "method": "predict"},
        "lookup": {"inputs": {"words": "words:0"}, "outputs": {"ids": model.ids}, "method": "classify"},
    }
    yield Export(
        model.sess,
        {"signatures": signatures, "default_signature": "predict_images", "init_op": model.legacy_init_op},
        predicts=[
            Predict(x4, {"scores": model.scores(x4)}, rtol=1e-6),
            Predict({"words": LOOKUP_WORDS}, {"ids": LOOKUP_IDS}, signature="lookup"),
        ],
        pyfunc=[
            PyfuncPredict({"words": LOOKUP_WORDS}, LOOKUP_IDS, signature="lookup"),
            PyfuncPredict(x4, model.scores(x4), signature="predict_images", rtol=1e-6),
        ],
        tensor_runs=[TensorRun("ids:0", {"words:0": LOOKUP_WORDS}, LOOKUP_IDS)],
    )


@contextlib.contextmanager
def _table_initializers_without_init_op(tf, tmp_path, ref_model):
    """Users forget `legacy_init_op`; the graph's table initializers run at load anyway."""
    yield Export(
        ref_model.sess,
        {"inputs": {"words": "words"}, "outputs": {"ids": "ids:0"}},
        predicts=[Predict(np.array([WORDS[1], "nope"], dtype=object), {"ids": [20, -1]})],
    )


@contextlib.contextmanager
def _reference_variables_names_and_tensor_infos(tf, tmp_path, ref_model, x4):
    model = ref_model
    with model.graph.as_default():
        image_info = tf.compat.v1.saved_model.utils.build_tensor_info(model.x)
    yield Export(
        model.sess,
        {"signature_name": "scores_only", "inputs": {"image": image_info}, "outputs": {"scores": "scores:0"}},
        predicts=[Predict({"image": x4}, {"scores": model.scores(x4)}, rtol=1e-6)],
    )


@contextlib.contextmanager
def _signature_def_protos_as_in_the_guides_builder(tf, tmp_path, ref_model, x4):
    model = ref_model
    info = tf.compat.v1.saved_model.utils.build_tensor_info
    with model.graph.as_default():
        prediction_signature = tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"images": info(model.x)},
            outputs={"scores": info(model.y)},
            method_name=tf.compat.v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        )
    yield Export(
        model.sess,
        {"signatures": {"predict_images": prediction_signature}},
        predicts=[Predict(x4, {"scores": model.scores(x4)}, rtol=1e-6)],
    )


@contextlib.contextmanager
def _gpu_pinned_graph(tf, tmp_path, x4):
    model = Tf1Model(tf, use_resource=True, device="/GPU:0")
    try:
        assert model.y.op.device.endswith("GPU:0")
        yield Export(
            model.sess,
            {"inputs": {"image": model.x}, "outputs": {"scores": model.y}},
            predicts=[Predict(x4, {"scores": model.scores(x4)}, rtol=1e-6)],
        )
    finally:
        model.sess.close()


@contextlib.contextmanager
def _vocabulary_file_table(tf, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    graph = tf.Graph()
    with graph.as_default():
        words = tf.compat.v1.placeholder(tf.string, [None], name="words")
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                str(vocab), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            default_value=-1,
        )
        ids = tf.identity(table.lookup(words), name="ids")
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(tf.compat.v1.tables_initializer())
        yield Export(
            sess,
            {"inputs": {"words": words}, "outputs": {"ids": ids}},
            predicts=[Predict(np.array([WORDS[2], "x", WORDS[0]], object), {"ids": [2, -1, 0]})],
            after_save=vocab.unlink,  # EAS has no such file
        )


@contextlib.contextmanager
def _init_op_that_reinitialises_variables(tf, tmp_path, ref_model, x4):
    model = ref_model
    with model.graph.as_default():
        init_everything = tf.group(
            tf.compat.v1.global_variables_initializer(), tf.compat.v1.tables_initializer(), name="init_everything"
        )
    yield Export(
        model.sess,
        {"inputs": {"image": model.x}, "outputs": {"scores": model.y}, "init_op": init_everything},
        predicts=[Predict(x4, {"scores": model.scores(x4)}, rtol=1e-6)],
    )


RESOURCE_NOTE = "resource variables -> VariableV2"
SESSION_CASES = [
    Case(
        "simple_save_semantics",
        _simple_save_semantics,
        fixtures=("resource_model", "x4"),
        log=True,
        signatures=["serving_default"],
        conf={
            ("signature_defs", "serving_default", "inputs", "image", "name"): "image:0",
            ("signature_defs", "serving_default", "outputs", "scores", "name"): "scores:0",
        },
        notes=(RESOURCE_NOTE,),
        variables_v2=True,
        devices_cleared=True,
    ),
    Case(
        "builder_semantics_with_table",
        _builder_semantics_with_table,
        fixtures=("resource_model", "x4"),
        log=True,
        signatures=["lookup", "predict_images"],
        default_signature="predict_images",
        conf={
            ("signature_defs", "lookup", "method_name"): "tensorflow/serving/classify",
            ("signature_defs", "lookup", "inputs", "words", "dtype"): "string",
        },
        variables_v2=True,
        devices_cleared=True,
    ),
    Case(
        "table_initializers_without_init_op",
        _table_initializers_without_init_op,
        fixtures=("ref_model",),
        variables_v2=False,
        devices_cleared=True,
    ),
    Case(
        "reference_variables_names_and_tensor_infos",
        _reference_variables_names_and_tensor_infos,
        fixtures=("ref_model", "x4"),
        default_signature="scores_only",
        notes_absent=(RESOURCE_NOTE,),
    ),
    Case(
        "signature_def_protos_as_in_the_guides_builder",
        _signature_def_protos_as_in_the_guides_builder,
        fixtures=("ref_model", "x4"),
        default_signature="predict_images",
    ),
    Case(
        "gpu_pinned_graph_predicts_on_cpu",
        _gpu_pinned_graph,
        fixtures=("x4",),
        notes=("cleared device placements",),
        variables_v2=True,
        devices_cleared=True,
    ),
    Case(
        "vocabulary_file_table_no_longer_needs_the_file",
        _vocabulary_file_table,
        note_prefixes=("vocabulary-file tables",),
    ),
    Case(
        "init_op_that_reinitialises_variables_keeps_the_weights",
        _init_op_that_reinitialises_variables,
        fixtures=("ref_model", "x4"),
        note_prefixes=("init_op: dropped variable initializers",),
    ),
]


@pytest.mark.parametrize("case", params(SESSION_CASES))
def test_session_round_trip(case, request, tmp_path, tf):
    run(case, "session", request, tmp_path, tf)


# --- bad input: a clear error naming the tensor, op or signature, and nothing on disk ---------


@pytest.fixture(scope="module")
def other_graph_tensor(tf):
    with tf.Graph().as_default():
        return tf.compat.v1.placeholder(tf.float32, [None, 4], name="elsewhere")


def _sig(inputs, outputs):
    return {"inputs": inputs, "outputs": outputs}


BAD_INPUTS = {
    "another graph": (
        lambda m, other: {"inputs": {"image": other}, "outputs": {"scores": m.y}},
        r"input 'image' is the tensor 'elsewhere:0' of another graph than the session's",
    ),
    "unknown name": (
        lambda m, other: {"inputs": {"image": "imagez:0"}, "outputs": {"scores": m.y}},
        r"names the tensor 'imagez:0', which is not in the session's graph.*'image'",
    ),
    "unlisted placeholder": (
        lambda m, other: {"inputs": {"words": m.words}, "outputs": {"scores": m.y}},
        r"output 'scores' \(scores:0\) depends on the placeholder 'image', which is not an input",
    ),
    "empty signature map": (lambda m, other: {"signatures": {}}, r"The signature map is empty"),
    "name used twice": (
        lambda m, other: {
            "inputs": {"image": m.x}, "outputs": {"scores": m.y}, "signature_name": "lookup",
            "signatures": {"lookup": _sig({"words": m.words}, {"ids": m.ids})},
        },
        r"The signature name 'lookup' is used twice",
    ),
    "default name used twice": (
        lambda m, other: {
            "inputs": {"image": m.x}, "outputs": {"scores": m.y},
            "signatures": {"serving_default": _sig({"words": m.words}, {"ids": m.ids})},
        },
        r"The signature name 'serving_default' is used twice",
    ),
    "empty key": (
        lambda m, other: {"inputs": {"": m.x}, "outputs": {"scores": m.y}},
        r"Signature 'serving_default' has an empty or non-string input key ''",
    ),
    "one tensor two keys": (
        lambda m, other: {"inputs": {"a": m.x, "b": "image:0"}, "outputs": {"scores": m.y}},
        r"maps the input keys 'a' and 'b' to the same tensor 'image:0'",
    ),
    "no outputs": (
        lambda m, other: {"inputs": {"image": m.x}, "outputs": {}},
        r"Signature 'serving_default' has no outputs",
    ),
    "bad method": (
        lambda m, other: {"signatures": {"s": {**_sig({"image": m.x}, {"scores": m.y}), "method": "guess"}}},
        r"Signature 's' has method 'guess'. Use 'predict', 'classify' or 'regress'",
    ),
    "unknown default": (
        lambda m, other: {"inputs": {"image": m.x}, "outputs": {"scores": m.y}, "default_signature": "nope"},
        r"`default_signature='nope'` is not one of the signatures \['serving_default'\]",
    ),
    "bad init op": (
        lambda m, other: {"inputs": {"image": m.x}, "outputs": {"scores": m.y}, "init_op": "no_such_op"},
        r"`init_op='no_such_op'` is not an op of the session's graph",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_error_and_leaves_nothing(case, tmp_path, ref_model, other_graph_tensor):
    make_kwargs, message = BAD_INPUTS[case]
    with pytest.raises(MlflowException, match=message):
        mes.save_model(ref_model.sess, tmp_path / "model", **make_kwargs(ref_model, other_graph_tensor))
    assert os.listdir(tmp_path) == []


def test_uninitialised_variables_are_named(tmp_path, tf):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        w = tf.compat.v1.get_variable("never_initialised", initializer=W, use_resource=False)
        y = tf.matmul(x, w, name="y")
    with tf.compat.v1.Session(graph=graph) as sess:
        with pytest.raises(MlflowException, match=r"variables \['never_initialised'\] are not initialised.*global_variables_initializer"):
            mes.save_model(sess, tmp_path / "model", inputs={"x": x}, outputs={"y": y})
    assert os.listdir(tmp_path) == []


def test_op_missing_in_the_requested_processor_is_named(tmp_path, tf):
    graph = tf.Graph()
    with graph.as_default():
        a = tf.compat.v1.placeholder(tf.float32, [None, 3], name="a")
        b = tf.compat.v1.placeholder(tf.float32, [None, 3], name="b")
        c = tf.math.multiply_no_nan(a, b, name="c")  # MulNoNan: TF 1.13+
    with tf.compat.v1.Session(graph=graph) as sess:
        with pytest.raises(MlflowException, match=r"(?s)cannot run on EAS processor 'tensorflow_cpu_1.12'.*node 'c' \(MulNoNan\)"):
            mes.save_model(
                sess, tmp_path / "model", inputs={"a": a, "b": b}, outputs={"c": c}, eas_processor="tensorflow_cpu_1.12"
            )
    assert os.listdir(tmp_path) == []


@pytest.mark.runtime
@pytest.mark.parametrize("tf_version", CI_RUNTIMES)
def test_session_with_table_runs_in_the_real_eas_runtime(tmp_path_factory, resource_model, x4, tf_version):
    """The C++ loader EAS uses (and the TF1 Python loader) of the real old wheel answer alike."""
    from mlflow_eas_savedmodel.runtimes.runtime_process import run_in_runtime

    model = resource_model
    path = tmp_path_factory.mktemp("runtime") / "model"
    mes.save_model(
        model.sess,
        path,
        signatures={
            "predict_images": {"inputs": {"images": model.x}, "outputs": {"scores": model.y}},
            "lookup": {"inputs": {"words": model.words}, "outputs": {"ids": model.ids}},
        },
        init_op=model.legacy_init_op,
    )
    words = np.array([WORDS[2], "cherry", WORDS[0]])
    run = run_in_runtime(
        str(path / "savedmodel"), tf_version, {"predict_images": {"images": x4}, "lookup": {"words": words}}
    )
    assert run.ok, run.report
    for outputs in (run.outputs, run.c_api_outputs):
        np.testing.assert_allclose(outputs["predict_images"]["scores"], model.scores(x4), rtol=1e-5)
        np.testing.assert_array_equal(outputs["lookup"]["ids"], [30, -1, 10])
