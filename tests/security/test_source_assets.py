"""A SavedModel's assets must be files of its own folder: no symlink out, no '..', no absolute
path. Nothing of an outside file may be read or land in the artifact."""

import os
from pathlib import Path

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes

SECRET = "root:x:0:0:the-secret-line"


@pytest.fixture
def vocab_export(tmp_path, tf):
    """A TF1 Builder SavedModel whose table reads ``assets/vocab.txt`` at load."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("red\ngreen\n")
    export_dir = tmp_path / "sm"
    graph = tf.Graph()
    with graph.as_default():
        words = tf.compat.v1.placeholder(tf.string, [None], name="words")
        init = tf.lookup.TextFileInitializer(str(vocab), tf.string, -2, tf.int64, -1)
        ids = tf.identity(tf.lookup.StaticHashTable(init, -1).lookup(words), name="ids")
        with tf.compat.v1.Session() as sess:
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(
                sess, ["serve"],
                signature_def_map={
                    "serving_default": tf.compat.v1.saved_model.predict_signature_def({"words": words}, {"ids": ids})
                },
                main_op=tf.compat.v1.tables_initializer(),
                assets_collection=graph.get_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS),
            )
            builder.save()
    vocab.unlink()
    return export_dir


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "outside" / "passwd"
    path.parent.mkdir()
    path.write_text(SECRET + "\n")
    return path


def _rename_asset(export_dir, new_name):
    """Rewrites the AssetFileDef's file name where TF1 Builders store it (a collection)."""
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    pb = export_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(pb.read_bytes())
    meta_graph = saved_model.meta_graphs[0]
    for value in meta_graph.collection_def["saved_model_assets"].any_list.value:
        asset = meta_graph_pb2.AssetFileDef()
        value.Unpack(asset)
        asset.filename = new_name
        value.Pack(asset)
    pb.write_bytes(saved_model.SerializeToString())


def _assert_refused(export_dir, target, detail):
    with pytest.raises(MlflowException) as info:
        mes.save_model(str(export_dir), target)
    message = info.value.message
    assert "names asset files outside its folder; nothing was read" in message, message
    assert detail in message, message
    assert "Copy the files into" in message
    assert not os.path.exists(target)
    assert SECRET not in message


def test_vocabulary_asset_inside_the_folder_converts(vocab_export, tmp_path):
    mes.save_model(str(vocab_export), tmp_path / "m")
    ids = mes.load_model(str(tmp_path / "m"), device="cpu").predict({"words": np.array(["green", "x"], object)})
    np.testing.assert_array_equal(ids["ids"], [1, -1])


def test_asset_symlinked_out_of_the_folder_is_refused(vocab_export, tmp_path, secret):
    asset = vocab_export / "assets" / "vocab.txt"
    asset.unlink()
    asset.symlink_to(secret)
    _assert_refused(vocab_export, tmp_path / "m", f"resolves to {str(secret)!r}")


def test_assets_folder_symlinked_out_is_refused(vocab_export, tmp_path, secret):
    (secret.parent / "vocab.txt").write_text(SECRET + "\n")
    os.rename(vocab_export / "assets", tmp_path / "moved_assets")
    (vocab_export / "assets").symlink_to(secret.parent, target_is_directory=True)
    _assert_refused(vocab_export, tmp_path / "m", "resolves to")


@pytest.mark.parametrize("name", ["../../outside/passwd", "ABSOLUTE"])
def test_asset_name_climbing_out_or_absolute_is_refused(vocab_export, tmp_path, secret, name):
    name = str(secret) if name == "ABSOLUTE" else name
    _rename_asset(vocab_export, name)
    _assert_refused(vocab_export, tmp_path / "m", f"{name!r} (tensor ")
    # The outside file's lines are nowhere under tmp_path but in the secret itself.
    leaked = [p for p in Path(tmp_path).rglob("*") if p.is_file() and p != secret
              and SECRET.encode() in p.read_bytes()]
    assert leaked == []
