"""Every kind of Keras source, the naming options, and each bad input's message.

Sources: Sequential, subclassed (built by a call, or given only ``input_example``), tf_keras,
``.keras`` and ``.h5`` files (Keras 3 and tf_keras H5), ``custom_objects`` kept with cloudpickle,
multi-input/multi-output models with list and dict structures. Each is saved, loaded with
``mlflow_eas_savedmodel.load_model`` and compared with the original model's own output. Every
refused input asserts its message and that no model folder (or partial folder) is left behind.
"""

import os

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import Model

import mlflow_eas_savedmodel as mes

RTOL, ATOL = 1e-5, 1e-6


def _rng():
    return np.random.default_rng(0)


def _save_and_load(model, path, **kwargs):
    """``(handle, flavor conf)`` of ``model`` saved at ``path``."""
    mes.save_model(model, path, **kwargs)
    return mes.load_model(str(path), device="cpu"), Model.load(str(path)).flavors[mes.FLAVOR_NAME]


def _keys(conf, signature="serving_default"):
    sig = conf["signature_defs"][signature]
    return list(sig["inputs"]), list(sig["outputs"])


def _close(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected), rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- source kinds


def test_sequential_model_keys_are_its_layer_names(tf, tmp_path, x4):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    handle, conf = _save_and_load(model, tmp_path / "m")
    inputs, outputs = _keys(conf)
    assert inputs[0].startswith("input_layer")  # the InputLayer's name, never 'keras_tensor_N'
    assert len(outputs) == 1
    _close(handle.predict(x4)[outputs[0]], model(x4))
    assert conf["source"] == "keras"


def test_sequential_built_by_calling_it_on_data(tf, tmp_path, x4):
    import keras

    model = keras.Sequential([keras.layers.Dense(2, activation="tanh")])
    model(x4)
    handle, conf = _save_and_load(model, tmp_path / "m")
    _close(handle.predict(x4)[_keys(conf)[1][0]], model(x4))


class _Doubler:
    """Builds a subclassed Keras model (a local class: Keras cannot rebuild it by name)."""

    @staticmethod
    def make():
        import keras

        class Doubler(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(3)

            def call(self, x):
                return self.dense(x) * 2.0

        return Doubler()


def test_subclassed_model_built_by_a_call(tf, tmp_path, x4):
    model = _Doubler.make()
    model(x4)
    handle, conf = _save_and_load(model, tmp_path / "m")
    assert _keys(conf) == (["inputs"], ["outputs"])
    _close(handle.predict(x4)["outputs"], model(x4))


def test_subclassed_model_given_only_an_input_example(tf, tmp_path, x4):
    model = _Doubler.make()
    assert not model.built
    handle, conf = _save_and_load(model, tmp_path / "m", input_example=x4[:2])
    shape = conf["signature_defs"]["serving_default"]["inputs"]["inputs"]["shape"]
    assert shape == [-1, 4]  # the batch dimension stays free
    _close(handle.predict(x4)["outputs"], model(x4))


@pytest.fixture(scope="module")
def tf_keras_model(tf):
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((4,), name="features")
    out = tf_keras.layers.Dense(3, name="logits")(tf_keras.layers.Dense(8, activation="relu")(inp))
    return tf_keras.Model(inp, out)


def test_tf_keras_model(tmp_path, tf_keras_model, x4):
    handle, conf = _save_and_load(tf_keras_model, tmp_path / "m")
    assert _keys(conf) == (["features"], ["logits"])
    _close(handle.predict(x4)["logits"], tf_keras_model(x4))
    assert conf["eas_processors"][0] == "tensorflow_cpu_1.12"


def test_tf_keras_h5_file(tmp_path, tf_keras_model, x4):
    tf_keras_model.save(tmp_path / "keras2.h5")
    handle, conf = _save_and_load(str(tmp_path / "keras2.h5"), tmp_path / "m")
    assert _keys(conf)[0] == ["features"]
    _close(handle.predict(x4)[_keys(conf)[1][0]], tf_keras_model(x4))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_file(tmp_path, mlp, x4, suffix):
    mlp.save(tmp_path / f"model{suffix}")
    handle, conf = _save_and_load(str(tmp_path / f"model{suffix}"), tmp_path / "m")
    assert _keys(conf) == (["image"], ["scores"])
    _close(handle.predict(x4)["scores"], mlp(x4))


@pytest.fixture(scope="module")
def custom_layer_file(tf, tmp_path_factory):
    """A .keras file with a custom layer Keras cannot find by name, and that layer's class."""
    import keras

    class Scale(keras.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, Scale(3.0, name="scaled")(keras.layers.Dense(2)(inp)))
    path = tmp_path_factory.mktemp("custom") / "custom.keras"
    model.save(path)
    return str(path), Scale, model


def test_custom_objects_are_used_to_load_and_stored_with_cloudpickle(tmp_path, custom_layer_file, x4):
    path, scale_cls, original = custom_layer_file
    handle, conf = _save_and_load(path, tmp_path / "m", custom_objects={"Scale": scale_cls})
    _close(handle.predict(x4)["scaled"], original(x4))
    assert conf["custom_objects"] == "custom_objects.cloudpickle"
    assert os.path.isfile(tmp_path / "m" / "custom_objects.cloudpickle")
    restored = handle.custom_objects["Scale"]
    assert restored.__name__ == "Scale"
    np.testing.assert_allclose(restored(0.5)(np.ones((1, 2), np.float32)), [[0.5, 0.5]])
    with open(tmp_path / "m" / "requirements.txt") as f:
        assert "cloudpickle==" in f.read()


def test_no_custom_objects_file_without_custom_objects(tmp_path, mlp):
    mes.save_model(mlp, tmp_path / "m")
    assert not os.path.exists(tmp_path / "m" / "custom_objects.cloudpickle")
    assert "custom_objects" not in Model.load(str(tmp_path / "m")).flavors[mes.FLAVOR_NAME]


def test_custom_layer_without_custom_objects_says_how_to_fix(tmp_path, custom_layer_file):
    path, _, _ = custom_layer_file
    _assert_refused(tmp_path, "pass the custom layers with `custom_objects=", path)


# --------------------------------------------------------------------------- multi-input / output


@pytest.fixture(scope="module")
def two_in_two_out(tf):
    """``(list-structured model, dict-structured model, feeds)`` sharing their layers."""
    import keras

    keras.utils.set_random_seed(0)
    a = keras.Input((4,), name="a")
    b = keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([a, b])
    o1 = keras.layers.Dense(3, name="o1")(h)
    o2 = keras.layers.Dense(1, activation="sigmoid", name="o2")(h)
    rng = _rng()
    feeds = {"a": rng.random((5, 4), np.float32), "b": rng.random((5, 2), np.float32)}
    return keras.Model([a, b], [o1, o2]), keras.Model({"a": a, "b": b}, {"y1": o1, "y2": o2}), feeds


def test_list_structured_model_keeps_its_names(tmp_path, two_in_two_out):
    model, _, feeds = two_in_two_out
    handle, conf = _save_and_load(model, tmp_path / "m")
    assert _keys(conf) == (["a", "b"], ["o1", "o2"])
    out = handle.predict(feeds)
    expected = model([feeds["a"], feeds["b"]])
    _close(out["o1"], expected[0])
    _close(out["o2"], expected[1])


def test_dict_structured_model_keeps_its_keys(tmp_path, two_in_two_out):
    _, model, feeds = two_in_two_out
    handle, conf = _save_and_load(model, tmp_path / "m")
    assert _keys(conf) == (["a", "b"], ["y1", "y2"])
    out, expected = handle.predict(feeds), model(feeds)
    _close(out["y1"], expected["y1"])
    _close(out["y2"], expected["y2"])


def test_keys_given_as_dicts_of_tensors_and_names(tmp_path, two_in_two_out):
    model, _, feeds = two_in_two_out
    handle, conf = _save_and_load(
        model,
        tmp_path / "m",
        inputs={"second": "b", "first": model.inputs[0]},
        outputs={"probability": model.outputs[1], "scores": "o1"},
    )
    sig = conf["signature_defs"]["serving_default"]
    assert sig["inputs"]["first"]["name"] == "first:0" and sig["inputs"]["first"]["shape"] == [-1, 4]
    assert sig["inputs"]["second"]["shape"] == [-1, 2]
    assert sig["outputs"]["scores"]["shape"] == [-1, 3]
    assert sig["outputs"]["probability"]["shape"] == [-1, 1]
    out = handle.predict({"first": feeds["a"], "second": feeds["b"]})
    expected = model([feeds["a"], feeds["b"]])
    _close(out["scores"], expected[0])
    _close(out["probability"], expected[1])


def test_keys_given_as_lists_and_a_signature_name(tmp_path, two_in_two_out):
    model, _, feeds = two_in_two_out
    handle, conf = _save_and_load(
        model, tmp_path / "m", inputs=["left", "right"], outputs=["y", "p"], signature_name="scoring"
    )
    assert conf["default_signature"] == "scoring" and list(conf["signature_defs"]) == ["scoring"]
    assert _keys(conf, "scoring") == (["left", "right"], ["p", "y"])
    out = handle.predict({"left": feeds["a"], "right": feeds["b"]}, signature_name="scoring")
    _close(out["y"], model([feeds["a"], feeds["b"]])[0])
    with pytest.raises(MlflowException, match=r"Unknown signature_name 'serving_default'. This model has: \['scoring'\]"):
        handle.predict({"left": feeds["a"], "right": feeds["b"]}, signature_name="serving_default")


def test_single_input_keyed_by_model_input(tmp_path, mlp, x4):
    handle, conf = _save_and_load(
        mlp, tmp_path / "m", inputs={"pixels": mlp.input}, outputs={"logits": mlp.output}
    )
    assert _keys(conf) == (["pixels"], ["logits"])
    _close(handle.predict({"pixels": x4})["logits"], mlp(x4))


# --------------------------------------------------------------------------- bad inputs


def _assert_refused(tmp_path, match, model, **kwargs):
    """Saving must fail with ``match`` in the message and leave nothing in the target folder."""
    parent = tmp_path / "refused"
    target = parent / "model"
    with pytest.raises(MlflowException, match=match) as info:
        mes.save_model(model, target, **kwargs)
    assert not target.exists()
    assert not parent.exists() or os.listdir(parent) == []
    return str(info.value)


def test_unsupported_object(tmp_path):
    _assert_refused(
        tmp_path, r"Cannot log an object of type builtins.list. Pass a Keras model \(Keras 3 or tf_keras\)", [1, 2]
    )


def test_keras_model_without_defined_inputs(tmp_path, tf):
    import keras

    model = keras.Sequential([keras.layers.Dense(2)], name="unbuilt")
    _assert_refused(
        tmp_path,
        r"The Keras model 'unbuilt' has no defined inputs. Build it with `keras.Input\(...\)`, "
        r"call it once on a batch, or pass `input_example=`",
        model,
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"inputs": ["x", "x"]}, r"`inputs=` uses the keys \['x'\] more than once. Keys must be unique."),
        ({"outputs": ["y", "y"]}, r"`outputs=` uses the keys \['y'\] more than once"),
        ({"inputs": ["x", ""]}, r"`inputs=` has an empty or non-string key ''. Keys must be names."),
        ({"outputs": {"": "o1", "z": "o2"}}, r"`outputs=` has an empty or non-string key ''"),
        (
            {"inputs": {"x": "a", "y": "a"}},
            r"`inputs=` maps both 'x' and 'y' to the model's input 'a'. Give each input one key.",
        ),
        (
            {"inputs": {"x": "a", "y": "nope"}},
            r"`inputs=\{'y': ...\}` does not refer to an input of the model. Use `model.inputs\[i\]` "
            r"or one of the names \['a', 'b'\]",
        ),
        ({"inputs": {"x": "a"}}, r"`inputs=` does not name the model's inputs \['b'\]. Every input needs a key."),
        ({"inputs": ["x"]}, r"`inputs=` lists 1 keys but the model has 2 inputs: \['a', 'b'\]"),
        ({"outputs": "y"}, r"`outputs=` must be a dict \{key: tensor or name\} or a list of keys."),
    ],
)
def test_bad_keys(tmp_path, two_in_two_out, kwargs, match):
    _assert_refused(tmp_path, match, two_in_two_out[0], **kwargs)


def test_existing_target_path(tmp_path, mlp):
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(MlflowException, match="already exists and is not empty. Save to a new path, or delete it first."):
        mes.save_model(mlp, target)
    assert os.listdir(tmp_path) == ["model"] and os.listdir(target) == ["keep.txt"]


def test_op_no_eas_runtime_has_is_named_with_its_node(tmp_path, tf):
    """``SegmentSumV2`` (TF 2.21) is in none of the six registries."""
    import keras

    class SegmentTotals(keras.layers.Layer):
        def call(self, x):
            ids = tf.zeros(tf.shape(x)[:1], tf.int32)
            return tf.raw_ops.SegmentSumV2(data=x, segment_ids=ids, num_segments=1)

    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, SegmentTotals(name="totals")(inp))
    message = _assert_refused(
        tmp_path, r"No EAS TensorFlow processor \(TF 1.12-2.7\) can run this model", model
    )
    for version in ("1.12", "1.14", "1.15", "2.3", "2.4", "2.7"):
        assert f"TF {version}: node '" in message
        assert f"(SegmentSumV2): op SegmentSumV2 does not exist in TF {version}" in message
    assert "totals" in message  # the node's name says which layer it came from
    assert "Replace these ops with ones older TensorFlow versions have." in message


@pytest.fixture(scope="module")
def diagonal_einsum_model(tf):
    """A model whose Einsum (a diagonal) has no exact rewrite, so it stays: TF 1.15+ only."""
    import keras

    inp = keras.Input((3, 3), name="m")
    return keras.Model(inp, keras.layers.Dense(2, name="out")(keras.ops.einsum("bii->bi", inp)))


def test_processor_that_lacks_an_op_is_refused_with_the_alternatives(tmp_path, diagonal_einsum_model):
    message = _assert_refused(
        tmp_path,
        r"The model cannot run on EAS processor 'tensorflow_cpu_1.12' \(TensorFlow 1.12\)",
        diagonal_einsum_model,
        eas_processor="tensorflow_cpu_1.12",
    )
    assert "(Einsum): op Einsum does not exist in TF 1.12" in message
    assert "einsum" in message.split("op Einsum")[0]  # names the node
    assert (
        "It can run on: tensorflow_cpu_1.15, tensorflow_cpu_2.3, tensorflow_cpu_2.4, tensorflow_cpu_2.7, "
        "tensorflow_gpu_1.15, tensorflow_gpu_2.4, tensorflow_gpu_2.7. Pass one of those as eas_processor="
    ) in message


def test_processor_that_has_every_op_is_accepted(tmp_path, diagonal_einsum_model):
    mes.save_model(diagonal_einsum_model, tmp_path / "m", eas_processor="tensorflow_cpu_1.15")
    conf = Model.load(str(tmp_path / "m")).flavors[mes.FLAVOR_NAME]
    assert "tensorflow_cpu_1.15" in conf["eas_processors"]
    assert any(n.startswith("Einsum kept (no exact rewrite)") for n in conf["conversion_notes"])


# --------------------------------------------------------------------------- bad predict input


@pytest.fixture(scope="module")
def mlp_handle(mlp, tmp_path_factory):
    path = tmp_path_factory.mktemp("mlp") / "m"
    mes.save_model(mlp, path)
    handle = mes.load_model(str(path), device="cpu")
    yield handle
    handle.close()


def test_predict_unknown_signature_name(mlp_handle, x4):
    with pytest.raises(MlflowException, match=r"Unknown signature_name 'nope'. This model has: \['serving_default'\]."):
        mlp_handle.predict(x4, signature_name="nope")


def test_predict_wrong_dtype(mlp_handle):
    with pytest.raises(
        MlflowException,
        match=r"Input 'image' of signature 'serving_default' has dtype <U1, but the signature expects "
        r"float32. Pass float32 values \(e.g. np.asarray\(x, dtype='float32'\)\)",
    ):
        mlp_handle.predict(np.array([["a", "b", "c", "d"]]))


def test_predict_wrong_shape(mlp_handle):
    with pytest.raises(
        MlflowException,
        match=r"Input 'image' of signature 'serving_default' has shape \(2, 3\), but the signature "
        r"expects \(None, 4\) \(None: any size\). Reshape the input.",
    ):
        mlp_handle.predict(np.zeros((2, 3), np.float32))


def test_predict_wrong_keys(mlp_handle, x4):
    with pytest.raises(MlflowException, match=r"takes inputs \['image'\]; got \['pixels'\] \(missing \['image'\]\)"):
        mlp_handle.predict({"pixels": x4})


@pytest.fixture(scope="module")
def score_probs_model(tf):
    """The issue's model: dict outputs ``score`` (-1, 1) and ``probs`` (-1, 3); Keras orders them
    by name, so ``model.outputs[0]`` is ``probs``."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((4,), name="x")
    return keras.Model(x, {"score": keras.layers.Dense(1, name="score_layer")(x),
                           "probs": keras.layers.Dense(3, activation="softmax", name="probs_layer")(x)})


def test_a_key_naming_another_output_is_refused_naming_both(tmp_path, score_probs_model):
    model = score_probs_model
    assert [tuple(t.shape) for t in model.outputs] == [(None, 3), (None, 1)]  # probs first
    _assert_refused(
        tmp_path,
        r"`outputs=\{'score': ...\}` refers to the model's output 'probs', but 'score' is the name of "
        r"another output of the model: the keys would be swapped. Keras orders a model's dict outputs by "
        r"name, so `model.outputs\[i\]` need not be the i-th one written. Refer to the output you mean by "
        r"name, e.g. `outputs=\{'score': 'score'\}`, or leave `outputs=` out to keep the model's names "
        r"\['score', 'probs'\].",
        model, outputs={"score": model.outputs[0], "probs": model.outputs[1]},
    )


def test_keys_by_name_keep_a_dict_output_model_right(tmp_path, score_probs_model, x4):
    model = score_probs_model
    handle, conf = _save_and_load(model, tmp_path / "m", outputs={"score": "score", "probs": "probs"})
    sig = conf["signature_defs"]["serving_default"]["outputs"]
    assert sig["score"]["shape"] == [-1, 1] and sig["probs"]["shape"] == [-1, 3]
    out, expected = handle.predict({"x": x4}), model(x4)
    _close(out["score"], expected["score"])
    _close(out["probs"], expected["probs"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"outputs": ["o2", "o1"]}, r"`outputs=` key 'o2' refers to the model's output 'o1', "
                                    r"but 'o2' is the name of another output of the model"),
        ({"inputs": {"b": "a", "a": "b"}}, r"`inputs=\{'b': ...\}` refers to the model's input 'a', "
                                           r"but 'b' is the name of another input of the model"),
    ],
    ids=["list-outputs", "dict-inputs"],
)
def test_swapped_keys_are_refused(tmp_path, two_in_two_out, kwargs, match):
    _assert_refused(tmp_path, match, two_in_two_out[0], **kwargs)
