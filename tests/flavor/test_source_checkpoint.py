"""Checkpoints as sources: Saver + .meta, Saver + build_fn, TF2 tf.train.Checkpoint, bad input.

The round trips are rows of ``CHECKPOINT_CASES``, run by one generic test through
``tests/support/round_trips.py``; the bad-input tests assert the messages and that nothing is left on disk.
"""

import contextlib
import os
import shutil

import numpy as np
import pytest
from conftest import CI_RUNTIMES
from mlflow.exceptions import MlflowException
from support.round_trips import Case, Export, Predict, PyfuncPredict, TensorRun, params, run

import mlflow_eas_savedmodel as mes

WORDS = ["cat", "dog"]


def build_lr_graph(tf):
    """The guide's "variable define ...": logistic regression plus a word table, TF1 style."""
    x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
    with tf.compat.v1.variable_scope("lr"):
        w = tf.compat.v1.get_variable("weights", [4, 3])
        b = tf.compat.v1.get_variable("bias", [3], initializer=tf.compat.v1.random_normal_initializer())
    y = tf.nn.softmax(tf.matmul(x, w) + b, name="y")
    words = tf.compat.v1.placeholder(tf.string, [None], name="words")
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(WORDS), tf.constant([7, 8], tf.int64)), -1
    )
    ids = tf.identity(table.lookup(words), name="ids")
    return x, y, words, ids


@pytest.fixture(scope="module")
def saver_checkpoint(tmp_path_factory, tf):
    """``(prefix, x, expected scores)`` of a trained-like tf.train.Saver checkpoint with .meta."""
    folder = tmp_path_factory.mktemp("lr_model")
    graph = tf.Graph()
    with graph.as_default():
        x, y, _, _ = build_lr_graph(tf)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            xs = np.random.default_rng(3).random((6, 4), dtype=np.float32)
            expected = sess.run(y, {x: xs})
            prefix = saver.save(sess, str(folder / "model.ckpt"))
    return prefix, xs, expected


@pytest.fixture
def without_meta(tmp_path, saver_checkpoint):
    """A copy of the checkpoint without its .meta graph."""
    prefix = saver_checkpoint[0]
    folder = tmp_path / "no_meta"
    folder.mkdir()
    for name in os.listdir(os.path.dirname(prefix)):
        if name.startswith("model.ckpt") and not name.endswith(".meta"):
            shutil.copy(os.path.join(os.path.dirname(prefix), name), folder / name)
    return str(folder / "model.ckpt")


def _keras_model():
    import keras

    inp = keras.Input((4,), name="image")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(3, name="scores")(hidden))


class Scorer:
    """A tf.Module with a served ``__call__`` and a second served method (built lazily)."""

    @staticmethod
    def make(tf):
        class _Scorer(tf.Module):
            def __init__(self):
                super().__init__()
                self.w = tf.Variable(tf.random.normal([4, 3], seed=1), name="w")

            @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="image")])
            def __call__(self, x):
                return {"scores": tf.matmul(x, self.w)}

            @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="image")])
            def top(self, x):
                return tf.argmax(tf.matmul(x, self.w), axis=1)

        return _Scorer()


SCORES_ONLY = {"inputs": {"image": "x:0"}, "outputs": {"scores": "y:0"}}
LOOKUP_WORDS = np.array(["dog", "bird", "cat"], dtype=object)


@contextlib.contextmanager
def _saver_checkpoint_with_meta(tf, tmp_path, saver_checkpoint):
    prefix, xs, expected = saver_checkpoint
    signatures = {
        "serving_default": {"inputs": {"image": "x:0"}, "outputs": {"scores": "y:0"}},
        "lookup": {"inputs": {"words": "words:0"}, "outputs": {"ids": "ids:0"}},
    }
    yield Export(
        prefix,
        {"signatures": signatures},
        predicts=[
            Predict(xs, {"scores": expected}, rtol=1e-6),
            Predict(LOOKUP_WORDS, {"ids": [8, -1, 7]}, signature="lookup"),
        ],
        pyfunc=[
            PyfuncPredict({"words": LOOKUP_WORDS}, [8, -1, 7], signature="lookup"),
            PyfuncPredict(xs, expected, rtol=1e-6),
        ],
        tensor_runs=[TensorRun("y:0", {"x:0": xs}, expected, rtol=1e-6)],
    )


@contextlib.contextmanager
def _checkpoint_with_input_example(tf, tmp_path, saver_checkpoint):
    """input_example is a hint for sources; a checkpoint does not need it but must accept it."""
    prefix, xs, expected = saver_checkpoint
    yield Export(
        prefix, {**SCORES_ONLY, "input_example": xs[:2]}, predicts=[Predict(xs, {"scores": expected}, rtol=1e-6)]
    )


@contextlib.contextmanager
def _checkpoint_folder(tf, tmp_path, saver_checkpoint):
    prefix, xs, expected = saver_checkpoint
    yield Export(os.path.dirname(prefix), SCORES_ONLY, predicts=[Predict(xs, {"scores": expected}, rtol=1e-6)])


@contextlib.contextmanager
def _saver_checkpoint_without_meta_rebuilt_by_build_fn(tf, tmp_path, without_meta, saver_checkpoint):
    _, xs, expected = saver_checkpoint

    def build_fn():
        x, y, words, ids = build_lr_graph(tf)
        return {"predict_images": {"inputs": {"images": x}, "outputs": {"scores": y}},
                "lookup": {"inputs": {"words": words}, "outputs": {"ids": ids}}}

    yield Export(
        without_meta,
        {"build_fn": build_fn, "default_signature": "predict_images"},
        predicts=[
            Predict(xs, {"scores": expected}, rtol=1e-6),
            Predict(np.array(["cat"], object), {"ids": [7]}, signature="lookup"),
        ],
    )


@contextlib.contextmanager
def _build_fn_returning_inputs_and_outputs(tf, tmp_path, without_meta, saver_checkpoint):
    _, xs, expected = saver_checkpoint

    def build_fn():
        x, y, _, _ = build_lr_graph(tf)
        return {"image": x}, {"scores": y}

    yield Export(without_meta, {"build_fn": build_fn}, predicts=[Predict(xs, {"scores": expected}, rtol=1e-6)])


@contextlib.contextmanager
def _tf2_object_checkpoint_with_keras_build_fn(tf, tmp_path, x4):
    trained = _keras_model()
    prefix = tf.train.Checkpoint(model=trained).save(str(tmp_path / "tf2" / "ckpt"))
    expected = trained(x4).numpy()
    yield Export(
        prefix,
        {"build_fn": _keras_model},
        predicts=[Predict(x4, {"scores": expected}, rtol=1e-5)],
        pyfunc=[PyfuncPredict(x4, expected, rtol=1e-5)],
    )


@contextlib.contextmanager
def _tf2_object_checkpoint_with_module_build_fn(tf, tmp_path, x4):
    trained = Scorer.make(tf)
    prefix = tf.train.Checkpoint(trained).save(str(tmp_path / "tf2" / "ckpt"))  # saved as the root
    yield Export(
        prefix,
        {"build_fn": lambda: Scorer.make(tf)},
        predicts=[
            Predict(x4, {"scores": trained(x4)["scores"].numpy()}, rtol=1e-5),
            Predict(x4, {"output_0": trained.top(x4).numpy()}, signature="top"),
        ],
    )


CHECKPOINT_CASES = [
    Case(
        "saver_checkpoint_with_meta",
        _saver_checkpoint_with_meta,
        fixtures=("saver_checkpoint",),
        log=True,
        signatures=["lookup", "serving_default"],
        conf={("signature_defs", "serving_default", "inputs", "image", "name"): "x:0"},
    ),
    Case(
        "checkpoint_with_input_example_saves_it",
        _checkpoint_with_input_example,
        fixtures=("saver_checkpoint",),
        input_example_saved=True,
        load_kwargs={},
    ),
    Case("checkpoint_folder_uses_its_latest_checkpoint", _checkpoint_folder, fixtures=("saver_checkpoint",)),
    Case(
        "saver_checkpoint_without_meta_rebuilt_by_build_fn",
        _saver_checkpoint_without_meta_rebuilt_by_build_fn,
        fixtures=("without_meta", "saver_checkpoint"),
        default_signature="predict_images",
    ),
    Case(
        "build_fn_returning_inputs_and_outputs",
        _build_fn_returning_inputs_and_outputs,
        fixtures=("without_meta", "saver_checkpoint"),
    ),
    Case(
        "tf2_object_checkpoint_with_keras_build_fn",
        _tf2_object_checkpoint_with_keras_build_fn,
        fixtures=("x4",),
        log=True,
    ),
    Case(
        "tf2_object_checkpoint_with_module_build_fn",
        _tf2_object_checkpoint_with_module_build_fn,
        fixtures=("x4",),
        signatures=["serving_default", "top"],
    ),
]


@pytest.mark.parametrize("case", params(CHECKPOINT_CASES))
def test_checkpoint_round_trip(case, request, tmp_path, tf):
    run(case, "checkpoint", request, tmp_path, tf)


# --- bad input -------------------------------------------------------------------------------


def test_wrong_prefix(tmp_path, saver_checkpoint):
    prefix = saver_checkpoint[0]
    with pytest.raises(MlflowException, match=r"Cannot log '.*model.ckpt-42': it is not .* a checkpoint prefix \(PREFIX.index\)"):
        mes.save_model(prefix + "-42", tmp_path / "m", inputs={"image": "x:0"}, outputs={"scores": "y:0"})
    assert os.listdir(tmp_path) == []


def test_index_missing_beside_the_meta(tmp_path, saver_checkpoint):
    prefix = saver_checkpoint[0]
    folder = tmp_path / "only_meta"
    folder.mkdir()
    shutil.copy(prefix + ".meta", folder / "other.ckpt.meta")
    shutil.copy(prefix + ".index", folder / "model.ckpt.index")
    with pytest.raises(MlflowException, match=r"No checkpoint at prefix .*other.ckpt.*other.ckpt.index does not exist.*found: \['.*model.ckpt'\]"):
        mes.save_model(str(folder / "other.ckpt"), tmp_path / "m", inputs={"image": "x:0"}, outputs={"scores": "y:0"})
    assert not (tmp_path / "m").exists()


def test_missing_shard(tmp_path, without_meta):
    os.remove(without_meta + ".data-00000-of-00001")
    with pytest.raises(MlflowException, match=r"is incomplete: the data shard\(s\) \['.*model.ckpt.data-00000-of-00001'\] are missing"):
        mes.save_model(without_meta, tmp_path / "m", build_fn=lambda: None)
    assert not (tmp_path / "m").exists()


def test_no_meta_and_no_build_fn(tmp_path, without_meta):
    with pytest.raises(MlflowException, match=r"has no model.ckpt.meta graph. Pass `build_fn=`"):
        mes.save_model(without_meta, tmp_path / "m", inputs={"image": "x:0"}, outputs={"scores": "y:0"})
    assert not (tmp_path / "m").exists()


def test_variable_absent_from_checkpoint_is_named(tmp_path, without_meta, tf):
    def build_fn():
        x, y, _, _ = build_lr_graph(tf)
        extra = tf.compat.v1.get_variable("lr/extra_scale", [3])
        return {"image": x}, {"scores": y * extra}

    with pytest.raises(MlflowException, match=r"The variables \['lr/extra_scale'\] are not in the checkpoint .*lr/bias"):
        mes.save_model(without_meta, tmp_path / "m", build_fn=build_fn)
    assert not (tmp_path / "m").exists()


def test_variable_of_another_shape_is_named(tmp_path, without_meta, tf):
    def build_fn():
        x = tf.compat.v1.placeholder(tf.float32, [None, 5], name="x")
        with tf.compat.v1.variable_scope("lr"):
            w = tf.compat.v1.get_variable("weights", [5, 3])
            b = tf.compat.v1.get_variable("bias", [3])
        return {"image": x}, {"scores": tf.matmul(x, w) + b}

    with pytest.raises(MlflowException, match=r"differ in shape: \['lr/weights: graph \[5, 3\], checkpoint \[4, 3\]'\]"):
        mes.save_model(without_meta, tmp_path / "m", build_fn=build_fn)


def test_build_fn_and_tensors_both_given(tmp_path, without_meta, tf):
    def build_fn():
        x, y, _, _ = build_lr_graph(tf)
        return {"image": x}, {"scores": y}

    with pytest.raises(MlflowException, match=r"`build_fn` returned signature tensors and `inputs=`"):
        mes.save_model(without_meta, tmp_path / "m", build_fn=build_fn, inputs={"image": "x:0"}, outputs={"scores": "y:0"})


def test_tf2_checkpoint_needs_build_fn(tmp_path, tf):
    prefix = tf.train.Checkpoint(model=Scorer.make(tf)).save(str(tmp_path / "tf2" / "ckpt"))
    with pytest.raises(MlflowException, match=r"is a TF2 object-based checkpoint \(tf.train.Checkpoint\).*Pass `build_fn=`"):
        mes.save_model(prefix, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_tf2_checkpoint_of_another_model(tmp_path, tf):
    prefix = tf.train.Checkpoint(model=_keras_model()).save(str(tmp_path / "tf2" / "ckpt"))
    with pytest.raises(MlflowException, match=r"The model from `build_fn` does not match the checkpoint"):
        mes.save_model(prefix, tmp_path / "m", build_fn=lambda: Scorer.make(tf))
    assert not (tmp_path / "m").exists()


@pytest.mark.runtime
@pytest.mark.parametrize("tf_version", CI_RUNTIMES)
def test_checkpoint_artifact_runs_in_the_real_eas_runtime(tmp_path, saver_checkpoint, tf_version):
    from mlflow_eas_savedmodel.runtimes.runtime_process import run_in_runtime

    prefix, xs, expected = saver_checkpoint
    mes.save_model(
        prefix,
        tmp_path / "m",
        signatures={
            "serving_default": {"inputs": {"image": "x:0"}, "outputs": {"scores": "y:0"}},
            "lookup": {"inputs": {"words": "words:0"}, "outputs": {"ids": "ids:0"}},
        },
    )
    words = np.array(["dog", "bird", "cat"])
    run = run_in_runtime(
        str(tmp_path / "m" / "savedmodel"), tf_version, {"serving_default": {"image": xs}, "lookup": {"words": words}}
    )
    assert run.ok, run.report
    for outputs in (run.outputs, run.c_api_outputs):
        np.testing.assert_allclose(outputs["serving_default"]["scores"], expected, rtol=1e-5)
        np.testing.assert_array_equal(outputs["lookup"]["ids"], [8, -1, 7])
