"""A SavedModel's assets must be files of its own folder.

TensorFlow's loaders build each asset's path as ``<folder>/assets/<AssetFileDef.filename>``
and feed it to the graph (a vocabulary table then reads it while loading). The file name comes
from the untrusted ``saved_model.pb``: an absolute name, a ``../../etc/passwd`` or a symlink
in ``assets/`` would make the conversion read a file from outside the folder and store its
lines in the artifact. :func:`check_assets` refuses that before TensorFlow sees the folder.
"""

import os

from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.layout import ASSETS_DIR as _ASSETS_DIR

_LEGACY_ASSETS_COLLECTION = "saved_model_assets"  # TF1 Builders store AssetFileDefs here too


def asset_file_defs(meta_graph):
    """Every ``AssetFileDef`` the TF1 and TF2 loaders read: the field and the TF1 collection."""
    from tensorflow.core.protobuf import meta_graph_pb2

    defs = list(meta_graph.asset_file_def)
    collection = meta_graph.collection_def.get(_LEGACY_ASSETS_COLLECTION)
    if collection is not None:
        for value in collection.any_list.value:
            asset = meta_graph_pb2.AssetFileDef()
            value.Unpack(asset)
            defs.append(asset)
    return defs


def inside(path, root):
    """Whether ``path``, after following symlinks, is ``root`` or lies under it."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, base]) == base


def check_assets(meta_graph, export_dir):
    """The asset tensor names of ``meta_graph``, after checking every asset stays inside.

    Raises:
        MlflowException: naming each asset whose file name is absolute, climbs out with
            ``..`` or resolves (through symlinks) outside ``export_dir``.
    """
    bad, tensors = [], []
    for asset in asset_file_defs(meta_graph):
        tensors.append(asset.tensor_info.name)
        name = asset.filename
        path = os.path.join(export_dir, _ASSETS_DIR, name)
        if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
            bad.append(f"{name!r} (tensor {asset.tensor_info.name}): not a plain name under assets/")
        elif not inside(path, export_dir):
            bad.append(
                f"{name!r} (tensor {asset.tensor_info.name}): resolves to {os.path.realpath(path)!r}"
            )
    if bad:
        listed = "\n  ".join(bad)
        raise invalid_parameter_value(
            f"The SavedModel in {export_dir!r} names asset files outside its folder; nothing was "
            f"read:\n  {listed}\nCopy the files into {os.path.join(export_dir, _ASSETS_DIR)!r} "
            "(no symlinks) and re-export the SavedModel with those assets."
        )
    return tensors
