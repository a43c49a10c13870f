"""Keras files are checked as Keras 3's safe mode checks them, before either Keras reads them,
so that the tf_keras fallback cannot be used to get around it (issue 20, item 5).

The attack: a tf_keras-only layer placed first (``ThresholdedReLU``, gone from Keras 3) makes
Keras 3 fail with "Unknown layer", the ``.h5`` falls through to tf_keras, and tf_keras reads
``StringLookup(vocabulary="/outside/file")`` or weights kept in HDF5 external storage pointing
at an outside file. Each case builds the real file, shows that the attack reads the outside file
when nothing stops it (the premise), then that ``save_model`` refuses it naming the layer or
dataset and the fix, leaves no folder, and opened nothing outside: the outside files live in a
folder deleted before the save, so a read would fail with another error than the refusal.
"""

import os
import shutil

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes

SECRET = ["secret-a", "secret-b"]


@pytest.fixture(scope="module")
def tf_keras(tf):
    return pytest.importorskip("tf_keras")


def _refused(path, target, *fragments, **kwargs):
    with pytest.raises(MlflowException) as info:
        mes.save_model(str(path), target, **kwargs)
    message = info.value.message
    for fragment in fragments:
        assert fragment in message, message
    assert not os.path.exists(target)
    return message


def _first_layer_unknown_to_keras3(tf_keras, inp):
    return tf_keras.layers.ThresholdedReLU(0.0, name="tf_keras_only")(inp)


def test_the_first_layer_sends_the_file_to_the_tf_keras_fallback(tf_keras, tmp_path):
    import keras

    inp = tf_keras.Input((3,), name="x")
    path = tmp_path / "k2.h5"
    tf_keras.Model(inp, _first_layer_unknown_to_keras3(tf_keras, inp)).save(path)
    with pytest.raises(Exception, match="Unknown layer: 'ThresholdedReLU'"):
        keras.saving.load_model(path, compile=False)


def test_a_plain_keras2_file_keras3_cannot_read_still_converts(tf_keras, tmp_path):
    inp = tf_keras.Input((3,), name="x")
    out = tf_keras.layers.Dense(2, name="dense")(_first_layer_unknown_to_keras3(tf_keras, inp))
    model = tf_keras.Model(inp, out)
    model.save(tmp_path / "k2.h5")
    mes.save_model(str(tmp_path / "k2.h5"), tmp_path / "m")
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    got = mes.load_model(str(tmp_path / "m"), device="cpu").predict({"x": x})
    np.testing.assert_allclose(next(iter(got.values())), model(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(SECRET) + "\n")
    return folder


def test_vocabulary_file_outside_the_h5_is_refused_unopened(tf_keras, tmp_path, outside):
    vocab = str(outside / "vocab.txt")
    x = tf_keras.Input((2,), name="x")
    s = tf_keras.Input((1,), dtype="string", name="s")
    ids = tf_keras.layers.StringLookup(vocabulary=vocab, name="lookup")(s)
    path = tmp_path / "vocab.h5"
    tf_keras.Model([x, s], [_first_layer_unknown_to_keras3(tf_keras, x), ids]).save(path)
    # The premise: tf_keras rebuilding the file reads the outside vocabulary.
    loaded = tf_keras.models.load_model(path, compile=False)
    assert loaded.get_layer("lookup").get_vocabulary()[1:] == SECRET

    shutil.rmtree(outside)
    _refused(
        path, tmp_path / "m", "layer 'lookup' (StringLookup)", f"from the file {vocab!r}",
        "outside the model file", "pass the vocabulary as a list",
        "save_model(..., safe_mode=False)",
    )


def test_vocabulary_file_refused_in_a_keras3_file_too(tf, tmp_path, outside):
    """Keras 3 keeps a vocabulary inside the archive; an edited config.json points it outside."""
    import json
    import zipfile

    import keras

    vocab = str(outside / "vocab.txt")
    s = keras.Input((1,), dtype="string", name="s")
    keras.Model(s, keras.layers.StringLookup(vocabulary=vocab, name="lookup")(s)).save(
        tmp_path / "good.keras"
    )
    with zipfile.ZipFile(tmp_path / "good.keras") as good, zipfile.ZipFile(
        tmp_path / "vocab.keras", "w"
    ) as edited:
        for name in good.namelist():
            data = good.read(name)
            if name == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "StringLookup":
                        layer["config"]["vocabulary"] = vocab
                data = json.dumps(config)
            edited.writestr(name, data)
    shutil.rmtree(outside)
    _refused(tmp_path / "vocab.keras", tmp_path / "m", "layer 'lookup' (StringLookup)", vocab,
             "safe_mode=False")


def test_vocabulary_file_with_safe_mode_off_is_the_owners_choice(tf_keras, tmp_path, outside):
    s = tf_keras.Input((1,), dtype="string", name="s")
    ids = tf_keras.layers.StringLookup(vocabulary=str(outside / "vocab.txt"), name="lookup")(s)
    model = tf_keras.Model(s, ids)
    model.save(tmp_path / "vocab.h5")
    mes.save_model(str(tmp_path / "vocab.h5"), tmp_path / "m", safe_mode=False)
    words = np.array([["secret-b"], ["nope"]], dtype=object)
    got = mes.load_model(str(tmp_path / "m"), device="cpu").predict({"s": words})
    np.testing.assert_array_equal(next(iter(got.values())), model(words).numpy())


def _dense_k2_h5(tf_keras, path):
    inp = tf_keras.Input((3,), name="x")
    dense = tf_keras.layers.Dense(2, name="dense")
    model = tf_keras.Model(inp, dense(_first_layer_unknown_to_keras3(tf_keras, inp)))
    model.save(path)
    return model


def _kernel_name(handle):
    names = []
    handle.visit(lambda n: names.append(n) if n.endswith("kernel:0") else None)
    assert len(names) == 1, names
    return names[0]


def test_weights_in_hdf5_external_storage_are_refused_unread(tf_keras, tmp_path, outside):
    import h5py

    path = tmp_path / "external.h5"
    _dense_k2_h5(tf_keras, path)
    stolen = outside / "stolen.bin"
    stolen.write_bytes(np.arange(6, dtype="float32").tobytes())
    with h5py.File(path, "r+") as handle:
        name = _kernel_name(handle)
        del handle[name]
        handle.create_dataset(name, shape=(3, 2), dtype="float32", external=[(str(stolen), 0, 24)])
    # The premise: tf_keras takes the outside file's bytes as the kernel.
    loaded = tf_keras.models.load_model(path, compile=False)
    np.testing.assert_array_equal(loaded.get_layer("dense").kernel.numpy().ravel(), np.arange(6))

    shutil.rmtree(outside)
    _refused(path, tmp_path / "m", f"dataset '/{name}' keeps its data in [{str(stolen)!r}]",
             "HDF5 external storage", "re-save the model")


@pytest.mark.parametrize("kind", ["external link", "soft link", "virtual dataset"])
def test_links_and_virtual_datasets_are_refused(tf_keras, tmp_path, outside, kind):
    import h5py

    path = tmp_path / "linked.h5"
    _dense_k2_h5(tf_keras, path)
    other = outside / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["kernel"] = np.ones((3, 2), "float32")
    with h5py.File(path, "r+") as handle:
        name = _kernel_name(handle)
        del handle[name]
        if kind == "external link":
            handle[name] = h5py.ExternalLink(str(other), "/kernel")
            expected = f"'/{name}' is an external link to {str(other)!r}"
        elif kind == "soft link":
            handle["elsewhere"] = np.ones((3, 2), "float32")
            handle[name] = h5py.SoftLink("/elsewhere")
            expected = f"'/{name}' is a SoftLink"
        else:
            layout = h5py.VirtualLayout(shape=(3, 2), dtype="float32")
            layout[:] = h5py.VirtualSource(str(other), "kernel", shape=(3, 2))
            handle.create_virtual_dataset(name, layout)
            expected = f"dataset '/{name}' is a virtual dataset"
    shutil.rmtree(outside)
    _refused(path, tmp_path / "m", expected, "outside the file", "re-save the model")


def test_lambda_behind_a_tf_keras_only_layer_is_refused_and_never_runs(tf_keras, tmp_path):
    marker = tmp_path / "lambda-ran"
    code = eval(f"lambda t: (__import__('os').system('echo ran >> {marker}'), t)[1]")  # noqa: S307
    inp = tf_keras.Input((3,), name="x")
    evil = tf_keras.layers.Lambda(code, name="evil")(_first_layer_unknown_to_keras3(tf_keras, inp))
    tf_keras.Model(inp, evil).save(tmp_path / "evil.h5")
    marker.unlink(missing_ok=True)  # building the model called the lambda
    _refused(tmp_path / "evil.h5", tmp_path / "m", "holds Python code", "layer 'evil' (Lambda)",
             "save_model(..., safe_mode=False)")
    assert not marker.exists()


def test_a_keras3_h5_keras3_cannot_read_does_not_fall_back(tf, tmp_path):
    import keras

    class Scaled(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    inp = keras.Input((3,), name="x")
    keras.Model(inp, Scaled(name="scaled")(inp)).save(tmp_path / "k3.h5")
    _refused(tmp_path / "k3.h5", tmp_path / "m", "with Keras 3", "written by Keras 3.",
             "tf_keras is not tried", "custom_objects={...}")


def test_a_truncated_h5_is_named_as_such(tmp_path):
    (tmp_path / "cut.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
    _refused(tmp_path / "cut.h5", tmp_path / "m", "is not a readable HDF5 file", "truncated")


def test_keras3_own_vocabulary_refusal_is_named_as_a_vocabulary(tf, tmp_path):
    """Should the config check miss a lookup, Keras 3's own refusal is not called 'Python code'."""
    import keras
    from keras.src.saving.serialization_lib import SafeModeScope

    from mlflow_eas_savedmodel.sources.keras import _safe_mode_refusal

    (tmp_path / "v.txt").write_text("a\n")
    with SafeModeScope(True), pytest.raises(ValueError) as raised:
        keras.layers.StringLookup(vocabulary=str(tmp_path / "v.txt"))
    message = _safe_mode_refusal("m.keras", raised.value).message
    assert "names a vocabulary file outside the model file" in message, message
    assert "holds Python code" not in message
    assert "save_model(..., safe_mode=False)" in message
