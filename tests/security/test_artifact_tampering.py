"""A tampered artifact is refused at load and by ``export``: a replaced custom-objects pickle (a
marker file proves it never ran), a custom_objects path rewritten in MLmodel, symlinks, missing
hashes, an MLmodel with keys removed or of the wrong type."""

import os
import pickle
import shutil

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.eas.package import write_eas_package
from support.mlmodel import read_mlmodel, write_mlmodel


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"echo unpickled >> {self.marker}",)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mlp):
    path = tmp_path_factory.mktemp("tamper") / "plain"
    mes.save_model(mlp, path)
    return path


@pytest.fixture(scope="module")
def saved_with_custom_objects(tmp_path_factory, tf):
    import keras

    class Triple(keras.layers.Layer):
        def call(self, x):
            return x * 3.0

    root = tmp_path_factory.mktemp("custom")
    inp = keras.Input((4,), name="image")
    keras.Model(inp, Triple(name="triple")(inp)).save(root / "custom.keras")
    mes.save_model(str(root / "custom.keras"), root / "model", custom_objects={"Triple": Triple})
    return root / "model"


@pytest.fixture
def copy_of(tmp_path):
    def copy(path):
        target = tmp_path / "copy"
        shutil.copytree(path, target)
        return target

    return copy


def _edit_flavor(model, edit):
    doc = read_mlmodel(model)
    edit(doc["flavors"]["eas_savedmodel"])
    write_mlmodel(model, doc)


def _refused(model, match, **kwargs):
    with pytest.raises(MlflowException, match=match):
        mes.load_model(str(model), device="cpu", **kwargs)
    with pytest.raises(MlflowException, match=match):
        mlflow.pyfunc.load_model(str(model), model_config={"device": "cpu", **(
            {"verify_integrity": kwargs["verify_integrity"]} if "verify_integrity" in kwargs else {})})


@pytest.mark.parametrize("verify_integrity", [None, False])
def test_replaced_custom_objects_pickle_is_never_unpickled(saved_with_custom_objects, copy_of, tmp_path, verify_integrity):
    model = copy_of(saved_with_custom_objects)
    marker = tmp_path / "unpickled"
    (model / "custom_objects.cloudpickle").write_bytes(pickle.dumps(_Payload(marker)))
    _refused(model, r"custom_objects.cloudpickle' does not match the SHA-256 recorded .* was not unpickled",
             verify_integrity=verify_integrity)
    assert not marker.exists()


def test_custom_objects_path_in_mlmodel_is_not_followed(saved_with_custom_objects, copy_of, tmp_path):
    model = copy_of(saved_with_custom_objects)
    marker = tmp_path / "unpickled"
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    _edit_flavor(model, lambda conf: conf.update(custom_objects=str(evil)))
    _refused(model, r"MLmodel file .* is damaged: eas_savedmodel.custom_objects is '/.*evil.pickle'; "
                    r"this package only ever writes 'custom_objects.cloudpickle'")
    assert not marker.exists()


def test_truncated_custom_objects_pickle_is_an_mlflow_exception(saved_with_custom_objects, copy_of):
    model = copy_of(saved_with_custom_objects)
    pickled = model / "custom_objects.cloudpickle"
    pickled.write_bytes(pickled.read_bytes()[:20])
    _refused(model, "was changed or cut short and was not unpickled")


def test_custom_objects_still_load(saved_with_custom_objects, x4):
    handle = mes.load_model(str(saved_with_custom_objects), device="cpu", verify_integrity=False)
    assert set(handle.custom_objects) == {"Triple"}
    np.testing.assert_allclose(next(iter(handle.predict(x4).values())), x4 * 3, rtol=1e-6)


@pytest.mark.parametrize("where", ["savedmodel/variables_link", "savedmodel/assets", "linked.txt"])
def test_symlinks_anywhere_in_the_artifact_are_refused_by_load_and_export(saved, copy_of, tmp_path, where):
    model = copy_of(saved)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (model / where).symlink_to(outside if where != "linked.txt" else outside / "secret.txt")
    _refused(model, rf"contains symbolic links \('{where}'\)", verify_integrity=False)
    with pytest.raises(MlflowException, match=rf"contains symbolic links \('{where}'\)"):
        write_eas_package(str(model), str(tmp_path / "upload"))
    assert not (tmp_path / "upload").exists()
    assert not [p for p in tmp_path.rglob("secret.txt") if "upload" in str(p)]


def test_removed_file_hashes_fail_the_load_and_export_unless_skipped(saved, copy_of, tmp_path, x4, mlp):
    model = copy_of(saved)
    _edit_flavor(model, lambda conf: conf.pop("file_sha256"))
    (model / "savedmodel" / "variables" / "variables.index").write_bytes(b"tampered")
    _refused(model, r"records no file hashes \(eas_savedmodel.file_sha256\).*verify_integrity=False")
    with pytest.raises(MlflowException, match="records no file hashes"):
        write_eas_package(str(model), str(tmp_path / "upload"))
    assert not (tmp_path / "upload").exists()
    # Skipping the check is explicit, and then the (here broken) files are what loads.
    clean = tmp_path / "clean"
    shutil.copytree(saved, clean)
    _edit_flavor(clean, lambda conf: conf.pop("file_sha256"))
    handle = mes.load_model(str(clean), device="cpu", verify_integrity=False)
    np.testing.assert_allclose(handle.predict(x4)["scores"], mlp(x4).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c.pop("signature_defs"), r"the key eas_savedmodel.signature_defs is missing"),
        (lambda c: c.pop("default_signature"), r"the key eas_savedmodel.default_signature is missing"),
        (lambda c: c.pop("saved_model_dir"), r"the key eas_savedmodel.saved_model_dir is missing"),
        (lambda c: c.update(signature_defs=["x"]), r"eas_savedmodel.signature_defs is a list, not a dict"),
        (lambda c: c.update(saved_model_dir="../elsewhere"), r"eas_savedmodel.saved_model_dir '../elsewhere' is not a folder name"),
        (lambda c: c.update(file_sha256="abc"), r"eas_savedmodel.file_sha256 is a str, not a dict"),
        (lambda c: c.update(default_signature="nope"), r"eas_savedmodel.default_signature 'nope' is not one of"),
        (lambda c: c["signature_defs"]["serving_default"].pop("inputs"),
         r"eas_savedmodel.signature_defs.serving_default.inputs is not a mapping of tensors"),
    ],
)
def test_damaged_mlmodel_names_the_key(saved, copy_of, tmp_path, edit, match):
    from mlflow_eas_savedmodel.eas.inspection import describe_model

    model = copy_of(saved)
    _edit_flavor(model, edit)
    match = "MLmodel file .* is damaged: " + match
    _refused(model, match)
    with pytest.raises(MlflowException, match=match):
        describe_model(str(model))
    with pytest.raises(MlflowException, match=match):
        write_eas_package(str(model), str(tmp_path / "upload"))
