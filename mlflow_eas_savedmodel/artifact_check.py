"""The one check a saved model passes before anything of it runs, at every entry point.

A model folder is untrusted input wherever it comes from (a registry, a copy, an upload), and
every command that hands its SavedModel to TensorFlow, to an old EAS runtime or to OSS runs
:func:`check_model_folder` first (:func:`check_model_uri` for a URI): ``load_model``,
``mlflow.pyfunc.load_model`` (and so ``mlflow models serve``), the CLI's ``serve``,
``serve-eas``, ``export`` and ``check-runtime``, ``mlflow deployments run-local -t eas`` and
``mlflow deployments create/update -t eas`` (before any upload). It refuses, in this order and
before TensorFlow reads anything but the ``saved_model.pb`` bytes:

* a ``.partial-`` folder (a save that was killed) and a damaged MLmodel file;
* symlinks anywhere in the model (they would make a load, a hash or a copy read outside it);
* files that do not match their recorded SHA-256 (:mod:`.integrity`; unless the check is
  skipped with ``verify_integrity=False`` / ``$MLFLOW_EAS_SAVEDMODEL_VERIFY=0``);
* a graph with ops the ops policy refuses (:mod:`.graph.ops_policy`), in every MetaGraph;
* an MLmodel whose ``signature_defs`` differ from the SignatureDefs of ``saved_model.pb``:
  the loaded handle feeds and fetches the tensors MLmodel names, so an MLmodel pointing an
  output at another tensor (one behind a hidden ``Save`` op, which the policy lets pass when
  no SignatureDef reaches it) would widen the graph that requests run.

Every entry point gets the same message for the same artifact, naming the model as the user
named it (``where``). It imports TensorFlow only to parse ``saved_model.pb``.
"""

import os
import tempfile

from mlflow.models import Model

from mlflow_eas_savedmodel import integrity
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.flavor_conf import FLAVOR_NAME, FlavorConf, not_this_flavor
from mlflow_eas_savedmodel.artifact import refuse_unfinished
from mlflow_eas_savedmodel.graph.layout import SAVED_MODEL_FILES

OUTCOME = "it was not loaded"
_SERVING_TAGS = {"serve"}  # what model.py and EAS's processors load
# TensorFlow's own hooks (__saved_model_init_op: the loader's init op), never a served
# SignatureDef, so MLmodel does not list them; the ops policy judges what they reach.
_LOADER_HOOK_PREFIX = "__saved_model_"
_MAX_LISTED = 10


def check_model_uri(model_uri, verify_integrity=None):
    """Checks the model at ``model_uri`` for a command that hands the URI on (``serve``).

    A local folder is checked in place; any other URI is downloaded into a temporary folder,
    checked and removed (the command that runs the model downloads and checks it again).

    Returns:
        The model's FlavorConf.

    Raises:
        MlflowException: see :func:`check_model_folder`.
    """
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    model_uri = os.fspath(model_uri)
    if os.path.isdir(model_uri):
        return check_model_folder(model_uri, verify_integrity=verify_integrity, where=model_uri)
    with tempfile.TemporaryDirectory(prefix="eas-check-") as tmp:
        local = _download_artifact_from_uri(artifact_uri=model_uri, output_path=tmp)
        return check_model_folder(local, verify_integrity=verify_integrity, where=model_uri)


def check_model_folder(model_path, conf=None, verify_integrity=None, where=None):
    """Checks the model folder ``model_path`` before anything of it runs; returns its FlavorConf.

    Args:
        model_path: the local model folder (the one holding MLmodel).
        conf: its :class:`~.flavor_conf.FlavorConf` when the caller has read it.
        verify_integrity: check the recorded SHA-256s (``None``: unless
            ``$MLFLOW_EAS_SAVEDMODEL_VERIFY=0``); symlinks, the ops policy and the
            SignatureDefs are checked whatever it says.
        where: the model as the user named it (URI or path), for the messages; default
            ``model_path``.

    Raises:
        MlflowException: naming the problem and the fix; nothing of the model has run.
    """
    model_path = os.path.abspath(os.fspath(model_path))
    where = model_path if where is None else os.fspath(where)
    refuse_unfinished(model_path)
    conf = conf or read_conf(model_path, where)
    saved_model_dir = conf.saved_model_path(model_path)
    # Symlinks first, always: hashing follows them, so a link would pass for an inside file.
    integrity.refuse_symlinks(model_path)
    if integrity.should_verify(verify_integrity):
        conf.verify_files(
            saved_model_dir,
            unrecorded=f"The MLmodel file of {where!r} records no file hashes "
            f"({FLAVOR_NAME}.file_sha256), so its SavedModel cannot be checked. Re-log the model, "
            f"or load a model you trust with verify_integrity=False (or {integrity.VERIFY_ENV}=0).",
        )
    meta_graphs = _read_meta_graphs(saved_model_dir, where)
    _check_ops(meta_graphs, saved_model_dir, conf, where)
    # The policy judged what the SignatureDefs of saved_model.pb reach: MLmodel may name no other.
    check_signature_defs(_serving_meta_graph(meta_graphs, where), conf, where)
    return conf


def read_conf(model_path, where=None):
    """The validated FlavorConf of the model folder ``model_path``."""
    where = model_path if where is None else where
    try:
        mlmodel = Model.load(model_path)
    except Exception as e:  # noqa: BLE001 - MLflow raises MlflowException, OSError, YAMLError
        raise not_this_flavor(where, {}) from e
    return FlavorConf.read(mlmodel, where)


def _read_meta_graphs(saved_model_dir, where):
    from mlflow_eas_savedmodel.sources.saved_model import read_saved_model

    if not os.path.isdir(saved_model_dir) or not any(
        os.path.isfile(os.path.join(saved_model_dir, f)) for f in SAVED_MODEL_FILES
    ):
        raise invalid_parameter_value(
            f"The model at {where!r} has no {os.path.basename(saved_model_dir)}/saved_model.pb: "
            "the artifact is incomplete. Download or copy the model again, or re-log it."
        )
    return list(read_saved_model(saved_model_dir).meta_graphs)


def _check_ops(meta_graphs, saved_model_dir, conf, where):
    """The ops policy again, on the artifact's own graphs (every MetaGraph)."""
    from mlflow_eas_savedmodel.graph import ops_policy
    from mlflow_eas_savedmodel.sources import assets

    for meta_graph in meta_graphs:
        ops_policy.check_meta_graph(
            meta_graph, f"The SavedModel of the model at {where!r}",
            assets.check_assets(meta_graph, saved_model_dir),
            allow_file_ops=conf.allow_file_ops is True,
            outcome=OUTCOME, allow_ops=conf.allow_ops, artifact=True,
        )


def _serving_meta_graph(meta_graphs, where):
    """The MetaGraph TensorFlow's loaders pick for the tags ``["serve"]`` (an exact tag set)."""
    for meta_graph in meta_graphs:
        if set(meta_graph.meta_info_def.tags) == _SERVING_TAGS:
            return meta_graph
    tags = [sorted(m.meta_info_def.tags) for m in meta_graphs]
    raise invalid_parameter_value(
        f"The SavedModel of the model at {where!r} has no MetaGraph tagged exactly ['serve'] "
        f"(its tags: {tags}), so no loader can serve it; {OUTCOME}. Re-log the model with "
        "mlflow_eas_savedmodel."
    )


def check_signature_defs(meta_graph, conf, where):
    """Refuses an MLmodel whose ``signature_defs`` differ from the graph's SignatureDefs.

    The names, keys, tensor names, dtypes and shapes must be equal (and the method names, where
    MLmodel records one; TensorFlow's ``__saved_model_*`` hooks are not SignatureDefs MLmodel
    lists): the handle runs exactly what MLmodel names, so MLmodel may describe the graph's
    SignatureDefs but never add to them.
    """
    from tensorflow.core.protobuf import meta_graph_pb2

    from mlflow_eas_savedmodel.metadata import describe_signature_defs

    served = meta_graph_pb2.MetaGraphDef()
    for name, signature in meta_graph.signature_def.items():
        if not name.startswith(_LOADER_HOOK_PREFIX):
            served.signature_def[name].CopyFrom(signature)
    try:
        actual = describe_signature_defs(served)
    except (TypeError, ValueError) as e:  # e.g. a tensor of dtype DT_INVALID
        raise invalid_parameter_value(
            f"The saved_model.pb of the model at {where!r} has a SignatureDef TensorFlow cannot "
            f"read ({e}); {OUTCOME}. Download or copy the model again, or re-log it."
        ) from None
    recorded = conf.signature_defs
    problems = []
    for name in sorted(set(recorded) | set(actual), key=str):
        if name not in actual:
            problems.append(f"signature {name!r} is in MLmodel but not in saved_model.pb")
            continue
        if name not in recorded:
            problems.append(f"signature {name!r} of saved_model.pb is missing from MLmodel")
            continue
        method = recorded[name].get("method_name")
        if method is not None and method != actual[name]["method_name"]:
            problems.append(
                f"signature {name!r}: MLmodel says method_name {method!r}, saved_model.pb "
                f"{actual[name]['method_name']!r}"
            )
        for side in ("inputs", "outputs"):
            mine, theirs = recorded[name][side], actual[name][side]
            for key in sorted(set(mine) | set(theirs), key=str):
                what = f"{side[:-1]} {key!r} of signature {name!r}"
                if key not in theirs:
                    problems.append(f"{what} is in MLmodel but not in saved_model.pb")
                elif key not in mine:
                    problems.append(f"{what} of saved_model.pb is missing from MLmodel")
                else:
                    problems += [
                        f"{what}: MLmodel says {field} {mine[key].get(field)!r}, saved_model.pb "
                        f"{theirs[key][field]!r}"
                        for field in ("name", "dtype", "shape")
                        if mine[key].get(field) != theirs[key][field]
                    ]
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise invalid_parameter_value(
            f"The MLmodel file of {where!r} describes other SignatureDefs than its "
            f"saved_model.pb ({FLAVOR_NAME}.signature_defs must equal them: the model runs the "
            f"tensors MLmodel names); {OUTCOME}:\n  {listed}{more}\nDownload or copy the model "
            "again, or re-log it with mlflow_eas_savedmodel.log_model."
        )
