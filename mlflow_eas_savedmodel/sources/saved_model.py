"""Existing SavedModel folders -> :class:`ServingGraph`, re-exported so that EAS loads them.

A SavedModel written by TensorFlow 2.21 does not load on EAS as it is (see
``reference/eas-runtimes``): TF2-style saves hold resource variables (``VarHandleOp.debug_name``)
and a function library with ops the old runtimes lack; TF1-style saves written without
``strip_default_attrs`` hold attrs such as ``MatMul.grad_a``. Every folder is therefore read and
re-exported through the one pipeline, keeping every SignatureDef's name, keys and method:

* TF1-style (a graph plus SignatureDefs, ``simple_save``/``Builder``): its graph is loaded into a
  session with the TF1 loader's steps but the restore (the main op runs, so tables are filled),
  then frozen like any session (:mod:`..graph.session_graph`), the main op kept as the init op. The variables
  are read from the folder's ``variables/`` bundle a piece at a time during the export, never
  all at once (restored into the session only if the main op needs them or the Saver renamed
  them).
* TF2-style variables are restored by ``tf.saved_model.load`` (once, all of them) and streamed
  from there.
* TF2-style (``tf.saved_model.save`` of a ``tf.Module``, Keras ``model.export``): loaded with
  ``tf.saved_model.load``; each function of ``.signatures`` is traced and frozen on its own, and
  the frozen graphs are merged into one, each under its signature's name as a node-name prefix
  (:mod:`..graph.functions`). Variables keep their names, so two signatures reading one
  variable share one ``VariableV2``.

What was changed is recorded in ``ServingGraph.notes`` (the flavor stores them as
``conversion_notes``) and logged at INFO.
"""

import logging
import os

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph import ops_policy, reference
from mlflow_eas_savedmodel.graph.functions import concrete_functions_to_serving_graph, variable_names
from mlflow_eas_savedmodel.graph.serving_graph import SERVING_TAG
from mlflow_eas_savedmodel.graph.session_graph import reads_session, serving_graph_from_session
from mlflow_eas_savedmodel.sources import assets

_logger = logging.getLogger(__name__)

# The SourceOptions this source takes.
OPTIONS = ("default_signature", "input_example", "allow_file_ops")

_MAIN_OP_COLLECTIONS = ("saved_model_main_op", "legacy_init_op")
_INIT_OP_SIGNATURE = "__saved_model_init_op"


def saved_model_to_serving_graph(model, options):
    """Reads the SavedModel folder ``model`` and converts it to a :class:`ServingGraph`.

    Args:
        model: the folder holding ``saved_model.pb`` or ``saved_model.pbtxt``.
        options: the :class:`~mlflow_eas_savedmodel.sources.SourceOptions`:
            ``default_signature``, the SignatureDef requests use when they name none (default
            ``serving_default`` when present, else the first by name); ``allow_file_ops``,
            keep file and network ops (see :mod:`..graph.ops_policy`).

    Example:
        >>> import tensorflow as tf
        >>> from mlflow_eas_savedmodel.sources import SourceOptions
        >>> from mlflow_eas_savedmodel.sources.saved_model import saved_model_to_serving_graph
        >>> module = tf.Module()
        >>> module.w = tf.Variable([[1.0], [2.0]])
        >>> module.predict = tf.function(
        ...     lambda x: {"y": x @ module.w}, input_signature=[tf.TensorSpec([None, 2], name="x")])
        >>> tf.saved_model.save(module, "./export_dir", signatures={
        ...     "serving_default": module.predict, "predict_images": module.predict})
        >>> serving_graph = saved_model_to_serving_graph("./export_dir", SourceOptions())
        >>> sorted(serving_graph.signatures)
        ['predict_images', 'serving_default']
    """
    saved_model = read_saved_model(model)
    meta_graph = _serving_meta_graph(model, saved_model)
    # Before TensorFlow loads anything: its loaders run the main op, the Saver and initializers.
    ops_policy.check_meta_graph(
        meta_graph, f"The SavedModel in {model!r}", assets.check_assets(meta_graph, model),
        allow_file_ops=options.allow_file_ops, allow_ops=options.allow_ops,
    )
    if len(meta_graph.object_graph_def.nodes) > 0:
        serving_graph = _from_tf2_saved_model(model, meta_graph, options.default_signature)
    else:
        serving_graph = _from_tf1_saved_model(model, meta_graph, options.default_signature)
    serving_graph.source = "saved_model"
    for note in serving_graph.notes:
        _logger.info("Re-exported SavedModel %s: %s", model, note)
    return serving_graph


def read_saved_model(path):
    """The ``SavedModel`` proto of the folder ``path`` (binary ``.pb`` or text ``.pbtxt``)."""
    import_tensorflow()
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    pb, pbtxt = (os.path.join(path, f) for f in ("saved_model.pb", "saved_model.pbtxt"))
    source = pb if os.path.exists(pb) else pbtxt
    if os.path.getsize(source) == 0:
        raise invalid_parameter_value(
            f"{source!r} is empty (0 bytes): the export was interrupted or the file was truncated "
            "in a copy. Export the model again (or copy the whole folder again)."
        )
    try:
        if source == pb:
            with open(pb, "rb") as f:
                saved_model.ParseFromString(f.read())
        else:
            with open(pbtxt) as f:
                text_format.Parse(f.read(), saved_model)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError or ParseError
        raise invalid_parameter_value(
            f"Cannot read {source!r}: {e}. The file is damaged; export the model again."
        ) from e
    return saved_model


def _serving_meta_graph(path, saved_model):
    if not saved_model.meta_graphs:
        raise invalid_parameter_value(
            f"The SavedModel in {path!r} holds no MetaGraph at all, so there is no graph to serve. "
            "Export the model again (tf.saved_model.save, or Builder.add_meta_graph_and_variables)."
        )
    tagged = [m for m in saved_model.meta_graphs if SERVING_TAG in m.meta_info_def.tags]
    if not tagged and len(saved_model.meta_graphs) == 1:
        tagged = list(saved_model.meta_graphs)
    if not tagged:
        tags = [list(m.meta_info_def.tags) for m in saved_model.meta_graphs]
        raise invalid_parameter_value(
            f"The SavedModel in {path!r} has no MetaGraph tagged 'serve' (its tags: {tags}). "
            "Export it with tags=['serve'] (tf.saved_model.SERVING)."
        )
    if not serving_signature_names(tagged[0]):
        raise invalid_parameter_value(
            f"The SavedModel in {path!r} has no SignatureDefs, so nothing could call it on EAS. "
            "Save it with `signatures=` (tf.saved_model.save) or a `signature_def_map` (Builder)."
        )
    return tagged[0]


def serving_signature_names(meta_graph):
    """The SignatureDefs a client can call (TF2 also stores its init op as a SignatureDef)."""
    return sorted(name for name in meta_graph.signature_def if name != _INIT_OP_SIGNATURE)


def _from_tf1_saved_model(path, meta_graph, default_signature):
    tf = import_tensorflow()
    graph = tf.Graph()
    sess = tf.compat.v1.Session(graph=graph)
    serving_graph = None
    try:
        # The graph and its init ops without restoring the variables: their values are read
        # from variables/ piece by piece at export, never all at once.
        try:
            loaded, restore = _load_tf1_without_variables(sess, list(meta_graph.meta_info_def.tags), path)
        except (tf.errors.OpError, ValueError, RuntimeError) as e:
            raise invalid_parameter_value(
                f"TensorFlow cannot load the SavedModel in {path!r}: {e}. Check that the folder is "
                "complete (saved_model.pb and variables/)."
            ) from e
        init_op = None
        for key in _MAIN_OP_COLLECTIONS:
            ops = graph.get_collection(key)
            if ops:
                init_op = list(ops)
                break
        serving_graph = serving_graph_from_session(
            sess,
            signatures={name: loaded.signature_def[name] for name in serving_signature_names(loaded)},
            default_signature=default_signature,
            init_op=init_op,
            bundle=(os.path.join(path, "variables", "variables"), restore),
        )
    finally:
        # Values still read from the session (renamed by the SavedModel's Saver) keep it open.
        if serving_graph is None or not reads_session(serving_graph):
            sess.close()
    serving_graph.reference = reference.tf1_saved_model_reference(path, list(meta_graph.meta_info_def.tags))
    serving_graph.notes.insert(0, "re-exported TF1 SavedModel: frozen and written with strip_default_attrs")
    return serving_graph


def _load_tf1_without_variables(sess, tags, path):
    """``loader.load`` without the restore: ``(meta graph, restore)``; ``restore()`` restores.

    The init op runs as the loader runs it (asset paths fed); one that reads variables gets
    them restored first.
    """
    tf = import_tensorflow()
    from tensorflow.python.saved_model import loader_impl

    loader = loader_impl.SavedModelLoader(path)
    # Devices cleared: Estimator-era exports pin ops to /device:GPU:0, which a CPU machine
    # cannot place; the export clears devices anyway.
    saver, _ = loader.load_graph(sess.graph, tags, clear_devices=True)
    restored = []

    def restore():
        if not restored and saver is not None:
            loader.restore_variables(sess, saver)
            restored.append(True)

    try:
        loader.run_init_ops(sess, tags)
    except tf.errors.FailedPreconditionError:
        restore()
        loader.run_init_ops(sess, tags)
    return loader.get_meta_graph_def_from_tags(tags), restore


def _from_tf2_saved_model(path, meta_graph, default_signature):
    tf = import_tensorflow()
    try:
        loaded = tf.saved_model.load(path, tags=list(meta_graph.meta_info_def.tags))
    except Exception as e:  # noqa: BLE001 - the TF2 loader raises many types
        raise invalid_parameter_value(
            f"TensorFlow cannot load the SavedModel in {path!r}: {e}. Check that the folder is "
            "complete (saved_model.pb and variables/) and was written by a compatible TensorFlow."
        ) from e
    functions = {}
    for name, concrete in loaded.signatures.items():
        _, kwargs = concrete.structured_input_signature
        input_keys = sorted(kwargs)
        output_keys = sorted(concrete.structured_outputs)
        method = meta_graph.signature_def[name].method_name if name in meta_graph.signature_def else ""
        functions[name] = (concrete, input_keys, output_keys, method or None)
    serving_graph = concrete_functions_to_serving_graph(
        functions, variable_names(loaded), default_signature=default_signature
    )
    serving_graph.reference = reference.tf2_saved_model_reference(
        path, list(meta_graph.meta_info_def.tags), {n: (f[1], f[2]) for n, f in functions.items()}
    )
    serving_graph.notes.insert(
        0,
        "re-exported TF2 SavedModel: signatures traced and frozen, resource variables -> "
        "VariableV2, function library inlined, default attrs stripped",
    )
    return serving_graph
