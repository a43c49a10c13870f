"""SHA-256 integrity of the SavedModel files: recorded at save, checked at every load."""

import os
import re
import shutil
import time
from urllib.parse import urlparse

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import integrity
from support.mlmodel import read_flavor

DATA_FILE = "variables/variables.data-00000-of-00001"


def _mlp(seed):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,), name="image")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(3, name="scores")(hidden), name="mlp")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tf, mlp):
    """The conftest MLP saved once, plus the same architecture with other weights."""
    root = tmp_path_factory.mktemp("integrity")
    mes.save_model(mlp, root / "model")
    mes.save_model(_mlp(seed=1), root / "other")
    return root


@pytest.fixture
def model_copy(saved, tmp_path):
    """A fresh copy of the saved model that a test may damage."""
    target = tmp_path / "model"
    shutil.copytree(saved / "model", target)
    return target


def _recorded(model_dir):
    return read_flavor(model_dir)["file_sha256"]


def test_save_records_the_sha256_of_every_savedmodel_file(saved):
    recorded = _recorded(saved / "model")
    on_disk = sorted(
        os.path.relpath(os.path.join(d, f), saved / "model" / "savedmodel").replace(os.sep, "/")
        for d, _, files in os.walk(saved / "model" / "savedmodel")
        for f in files
    )
    assert sorted(recorded) == on_disk
    assert {"saved_model.pb", "variables/variables.index", DATA_FILE} <= set(recorded)
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in recorded.values())
    assert recorded == integrity.hash_tree(saved / "model" / "savedmodel")


def test_intact_model_loads_and_predicts_like_the_keras_model(saved, mlp, x4):
    handle = mes.load_model(str(saved / "model"), device="cpu")
    np.testing.assert_allclose(handle.predict(x4)["scores"], mlp(x4).numpy(), rtol=1e-5, atol=1e-6)


def _flip_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _delete(path):
    os.remove(path)


def _add_beside(path):
    with open(os.path.join(os.path.dirname(path), "stray.bin"), "wb") as f:
        f.write(b"not part of the model")


@pytest.mark.parametrize(
    "damage, rel, message",
    [
        (_flip_byte, DATA_FILE, rf"file '{DATA_FILE}' was changed or truncated"),
        (_truncate, "saved_model.pb", r"file 'saved_model.pb' was changed or truncated \(\d+ bytes"),
        (_delete, "variables/variables.index", r"missing file 'variables/variables.index'"),
        (_add_beside, "variables/variables.index", r"unexpected extra file 'variables/stray.bin'"),
    ],
    ids=["changed", "truncated", "missing", "extra"],
)
def test_damaged_file_fails_every_load_naming_the_file(model_copy, damage, rel, message):
    import mlflow.pyfunc

    damage(os.path.join(model_copy, "savedmodel", rel))
    with pytest.raises(MlflowException, match=message) as raised:
        mes.load_model(str(model_copy), device="cpu")
    assert "verify_integrity=False" in str(raised.value)
    assert "does not match the SHA-256 hashes recorded" in str(raised.value)
    with pytest.raises(MlflowException, match=message):
        mlflow.pyfunc.load_model(str(model_copy))


@pytest.fixture
def swapped_weights(saved, model_copy):
    """The model with the variables of a same-shaped model copied over its own.

    TensorFlow loads it without complaint (each bundle's own checksums are consistent) and
    predicts the other model's numbers: the silently wrong model the hashes exist to catch.
    """
    shutil.rmtree(model_copy / "savedmodel" / "variables")
    shutil.copytree(saved / "other" / "savedmodel" / "variables", model_copy / "savedmodel" / "variables")
    return model_copy


def test_swapped_weights_are_caught_and_would_otherwise_predict_wrong(swapped_weights, x4, saved):
    with pytest.raises(MlflowException, match=rf"file '{DATA_FILE}' was changed"):
        mes.load_model(str(swapped_weights), device="cpu")

    unchecked = mes.load_model(str(swapped_weights), device="cpu", verify_integrity=False)
    original = mes.load_model(str(saved / "model"), device="cpu")
    other = mes.load_model(str(saved / "other"), device="cpu")
    wrong = unchecked.predict(x4)["scores"]
    np.testing.assert_array_equal(wrong, other.predict(x4)["scores"])
    assert not np.allclose(wrong, original.predict(x4)["scores"])


def test_pyfunc_skips_the_check_with_model_config_or_env(swapped_weights, saved, x4, monkeypatch):
    import mlflow.pyfunc

    expected = mes.load_model(str(saved / "other"), device="cpu").predict(x4)["scores"]
    with pytest.raises(MlflowException, match="was changed or truncated"):
        mlflow.pyfunc.load_model(str(swapped_weights), model_config={"verify_integrity": True})
    loaded = mlflow.pyfunc.load_model(str(swapped_weights), model_config={"verify_integrity": False})
    np.testing.assert_array_equal(loaded.predict(x4), expected)

    monkeypatch.setenv(integrity.VERIFY_ENV, "0")
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(str(swapped_weights)).predict(x4), expected)
    # An explicit True beats the environment.
    with pytest.raises(MlflowException, match="was changed or truncated"):
        mes.load_model(str(swapped_weights), device="cpu", verify_integrity=True)
    monkeypatch.setenv(integrity.VERIFY_ENV, "1")
    with pytest.raises(MlflowException, match="was changed or truncated"):
        mlflow.pyfunc.load_model(str(swapped_weights))


def test_logged_model_is_verified_after_download(tracking_uri, mlp, x4):
    import mlflow

    with mlflow.start_run():
        info = mes.log_model(mlp, name="model")
    handle = mes.load_model(info.model_uri, device="cpu")
    np.testing.assert_allclose(handle.predict(x4)["scores"], mlp(x4).numpy(), rtol=1e-5, atol=1e-6)

    # Damage the stored artifact itself: the next download must not load.
    stored = urlparse(mlflow.get_logged_model(info.model_id).artifact_location).path
    _truncate(os.path.join(stored, "savedmodel", "variables", "variables.index"))
    with pytest.raises(MlflowException, match="file 'variables/variables.index' was changed"):
        mes.load_model(info.model_uri, device="cpu")


def test_verify_and_hash_tree_api(model_copy):
    root = model_copy / "savedmodel"
    expected = integrity.hash_tree(root)
    integrity.verify(root, expected)  # intact: no error
    integrity.verify(str(root), expected)
    with pytest.raises(MlflowException, match="recorded file hashes .* are missing or malformed"):
        integrity.verify(root, {})
    with pytest.raises(MlflowException, match="recorded file hashes .* are missing or malformed"):
        integrity.verify(root, None)
    with pytest.raises(MlflowException, match="SavedModel folder .* is missing"):
        integrity.verify(model_copy / "nowhere", expected)
    with pytest.raises(MlflowException, match="is not a folder"):
        integrity.hash_tree(model_copy / "nowhere")
    # Every problem is listed, not only the first.
    _truncate(root / "saved_model.pb")
    os.remove(root / "variables" / "variables.index")
    with pytest.raises(MlflowException) as raised:
        integrity.verify(root, expected)
    assert "missing file 'variables/variables.index'" in str(raised.value)
    assert "file 'saved_model.pb' was changed or truncated" in str(raised.value)


@pytest.mark.parametrize(
    "value, env, expected",
    [(None, None, True), (None, "0", False), (None, "false", False), (None, "1", True),
     (False, None, False), (True, "0", True), ("0", None, False), ("yes", "0", True)],
)
def test_should_verify(value, env, expected, monkeypatch):
    if env is None:
        monkeypatch.delenv(integrity.VERIFY_ENV, raising=False)
    else:
        monkeypatch.setenv(integrity.VERIFY_ENV, env)
    assert integrity.should_verify(value) is expected


def test_sha256_streams_large_files_fast(tmp_path):
    """Hashing speed for GB-size variables: printed, and bounded well below disk-limited speed."""
    import hashlib

    size = 128 * 1024 * 1024
    block = np.random.default_rng(0).bytes(integrity._BLOCK_BYTES)
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    start = time.perf_counter()
    digest = integrity.sha256_file(path)
    seconds = time.perf_counter() - start
    reference = hashlib.sha256()
    with open(path, "rb") as f:
        reference.update(f.read())
    assert digest == reference.hexdigest()
    mb_per_s = size / 1e6 / seconds
    print(f"\nSHA-256 of {size >> 20} MiB in 1 MiB blocks: {seconds:.2f} s, {mb_per_s:.0f} MB/s")
    # ~10x below what SHA-256 does on any current CPU: fails only if streaming is broken.
    assert mb_per_s > 50


# --- The per-process memo: an unchanged file is not hashed again ------------------------------


@pytest.fixture
def quick_settle(monkeypatch):
    """Files count as settled 0.2 s after their last change (2 s by default) to keep this fast."""
    monkeypatch.setattr(integrity, "SETTLED_SECONDS", 0.2)
    reads = []
    real = integrity._read_sha256
    monkeypatch.setattr(integrity, "_read_sha256", lambda f: reads.append(f.name) or real(f))
    return reads


def _settled_file(tmp_path, content=b"weights " * 1000):
    path = tmp_path / "variables.data"
    path.write_bytes(content)
    time.sleep(0.3)
    return path


def test_an_unchanged_settled_file_is_hashed_once(tmp_path, quick_settle):
    path = _settled_file(tmp_path)
    digest = integrity.sha256_file(path)
    assert integrity.sha256_file(path) == digest == integrity.hash_tree(tmp_path)["variables.data"]
    assert quick_settle == [str(path)]  # read once, then one stat per check


def test_a_file_changed_in_place_with_size_and_mtime_kept_is_hashed_again(tmp_path, quick_settle):
    path = _settled_file(tmp_path)
    expected = integrity.hash_tree(tmp_path)
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"W")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns  # what os.utime cannot reset
    with pytest.raises(MlflowException, match=r"file 'variables.data' was changed or truncated"):
        integrity.verify(tmp_path, expected)
    assert len(quick_settle) == 2


def test_a_file_replaced_by_another_of_the_same_size_and_mtime_is_hashed_again(tmp_path, quick_settle):
    path = _settled_file(tmp_path)
    expected = integrity.hash_tree(tmp_path)
    before = os.stat(path)
    other = tmp_path / "other"
    other.write_bytes(b"Weights " * 1000)
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, path)
    with pytest.raises(MlflowException, match=r"file 'variables.data' was changed or truncated"):
        integrity.verify(tmp_path, expected)


def test_a_file_changed_moments_ago_is_not_remembered(tmp_path, quick_settle):
    path = tmp_path / "fresh"
    path.write_bytes(b"just written")
    integrity.sha256_file(path)
    integrity.sha256_file(path)
    # Its ctime is within SETTLED_SECONDS: a change within the same timestamp tick would keep
    # every fact the same, so it is read every time until it has settled.
    assert quick_settle == [str(path)] * 2
