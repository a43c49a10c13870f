"""Subclassed Keras 3 and tf_keras models (issue 21, item 5): called before saving or not, with
``input_example`` or without, taking one tensor or a dict of features (as tensorflow-recommenders'
models do). Each converts and answers like the model itself, or is refused with an
``MlflowException`` naming the cause and the fix; no folder is left behind. tf_keras subclassed
models raised a bare ``TypeError: 'NoneType' object is not iterable`` (``model.inputs`` is None).
"""

import os

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import Model

import mlflow_eas_savedmodel as mes

X = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
FEATURES = {"a": X, "b": X[:, :2].copy()}
WORDS = np.array([["b"], ["a"], ["zzz"], ["c"], ["a"]])


def _lib(name):
    if name == "tf_keras":
        return pytest.importorskip("tf_keras")
    import keras

    return keras


def _make(lib, kind):
    """A fresh subclassed model (classes local to the call: nothing rebuilds them by name)."""

    class Single(lib.Model):
        def __init__(self):
            super().__init__(name="single")
            self.dense = lib.layers.Dense(3)

        def call(self, x):
            return self.dense(x) * 2.0

    class Features(lib.Model):
        def __init__(self):
            super().__init__(name="features")
            self.da, self.db = lib.layers.Dense(3), lib.layers.Dense(3)

        def call(self, features):
            return {"score": self.da(features["a"]) + self.db(features["b"])}

    return Single() if kind == "single" else Features()


def _saved(model, path, **kwargs):
    mes.save_model(model, path, **kwargs)
    conf = Model.load(str(path)).flavors[mes.FLAVOR_NAME]["signature_defs"]["serving_default"]
    return mes.load_model(str(path), device="cpu"), conf


CASES = [
    ("tf_keras", "single", True, False),
    ("tf_keras", "single", False, True),
    ("tf_keras", "features", True, False),
    ("tf_keras", "features", False, True),
    ("keras", "features", True, False),
    ("keras", "features", False, True),
]


@pytest.mark.parametrize("lib_name,kind,called,example", CASES)
def test_subclassed_model_converts_and_answers(tf, tmp_path, lib_name, kind, called, example):
    model = _make(_lib(lib_name), kind)
    data = X if kind == "single" else FEATURES
    if called:
        model(data)
    kwargs = {}
    if example:
        kwargs["input_example"] = X[:2] if kind == "single" else {k: v[:2] for k, v in data.items()}
    handle, conf = _saved(model, tmp_path / "m", **kwargs)
    expected = model(data)
    expected = expected if isinstance(expected, dict) else {"outputs": expected}
    got = handle.predict(data)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], np.asarray(expected[key]), rtol=1e-5, atol=1e-6)
    wanted = ["inputs"] if kind == "single" else ["a", "b"]
    assert sorted(conf["inputs"]) == wanted
    assert all(spec["shape"][0] == -1 for spec in conf["inputs"].values())  # the batch stays free


def test_called_tf_keras_model_keeps_the_dtypes_of_its_first_call(tf, tmp_path):
    """tf_keras records the call's TensorSpecs: a string feature needs no example."""
    tf_keras = _lib("tf_keras")

    class Tower(tf_keras.Model):
        def __init__(self):
            super().__init__(name="tower")
            self.lookup = tf_keras.layers.StringLookup(vocabulary=["a", "b", "c"])
            self.embed = tf_keras.layers.Embedding(4, 3)

        def call(self, features):
            return self.embed(self.lookup(features["word"]))[:, 0, :] + features["x"][:, :1]

    model = Tower()
    data = {"word": WORDS, "x": X}
    model(data)
    handle, conf = _saved(model, tmp_path / "m")
    assert conf["inputs"]["word"]["dtype"] == "string"
    np.testing.assert_allclose(
        handle.predict(data)["outputs"], model(data).numpy(), rtol=1e-5, atol=1e-6
    )


def _refused(model, target, *fragments, **kwargs):
    with pytest.raises(MlflowException) as info:
        mes.save_model(model, target, **kwargs)
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    assert not os.path.exists(target)


@pytest.mark.parametrize("lib_name", ["tf_keras", "keras"])
@pytest.mark.parametrize("kind", ["single", "features"])
def test_never_called_without_an_example_is_refused_with_the_fix(tf, tmp_path, lib_name, kind):
    model = _make(_lib(lib_name), kind)
    _refused(model, tmp_path / "m", f"The Keras model {model.name!r} has no defined inputs",
             "call it once on a batch", "pass `input_example=`", "was never called")


def test_keras3_guessed_dtype_that_does_not_trace_names_the_guess(tf, tmp_path):
    """Keras 3 keeps only the shapes of the first call; a string input traced as float32 fails."""
    import keras

    class Lookup(keras.Model):
        def __init__(self):
            super().__init__(name="lookup_model")
            self.lookup = keras.layers.StringLookup(vocabulary=["a", "b", "c"])

        def call(self, word):
            return self.lookup(word)

    model = Lookup()
    model(WORDS)
    _refused(model, tmp_path / "m", "Keras 3 records only the input shapes", "float32",
             "Pass `input_example=`")
    handle, _ = _saved(model, tmp_path / "ok", input_example=WORDS[:2])
    np.testing.assert_array_equal(handle.predict(WORDS)["outputs"], model(WORDS).numpy())


def test_call_with_several_arguments_is_refused_with_the_fix(tf, tmp_path):
    import keras

    class TwoArgs(keras.Model):
        def __init__(self):
            super().__init__(name="two_args")
            self.dense = keras.layers.Dense(2)

        def call(self, a, b):
            return self.dense(a) + self.dense(b)

    model = TwoArgs()
    model(X, X)
    _refused(model, tmp_path / "m", "takes its inputs as 2 arguments of `call`",
             "Make `call` take one tensor, a list or a dict")
