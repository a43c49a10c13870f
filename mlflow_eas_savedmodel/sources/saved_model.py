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
* TF2-style variables are read from ``variables/`` the same way: the functions are loaded with
  the variables created uninitialized (``experimental_skip_checkpoint``) and each variable is
  matched to its checkpoint key through the checkpoint's object graph. Only a folder whose
  checkpoint holds more than variables (a mutable table's contents) is restored whole by
  ``tf.saved_model.load``; the conversion notes say which happened.
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
import re

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value, pipeline_stage
from mlflow_eas_savedmodel.graph import ops_policy, reference
from mlflow_eas_savedmodel.graph.functions import (
    Endpoint,
    concrete_functions_to_serving_graph,
    variable_names,
)
from mlflow_eas_savedmodel.graph.layout import (
    CHUNKED_SAVED_MODEL,
    LEGACY_INIT_OP_KEY,
    MAIN_OP_KEY,
    SAVED_MODEL_FILES,
    variables_prefix,
)
from mlflow_eas_savedmodel.graph.serving_graph import SERVING_TAG
from mlflow_eas_savedmodel.graph.session_graph import reads_session, serving_graph_from_session
from mlflow_eas_savedmodel.sources import assets
from mlflow_eas_savedmodel.sources.source import Source, as_path

_logger = logging.getLogger(__name__)

# The SourceOptions this source takes.
OPTIONS = ("default_signature", "input_example", "allow_file_ops")

_MAIN_OP_COLLECTIONS = (MAIN_OP_KEY, LEGACY_INIT_OP_KEY)
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
        check_table_files_are_assets(model, meta_graph)
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
    pb, pbtxt = (os.path.join(path, f) for f in SAVED_MODEL_FILES)
    if not os.path.exists(pb) and not os.path.exists(pbtxt):
        _refuse_chunked(path)
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


def _refuse_chunked(path):
    """A ``saved_model.cpb`` alone: TensorFlow's chunked format (``experimental_image_format``).

    TensorFlow's open-source builds can neither write nor read it (TF 2.21: "The option
    `experimental_image_format` is disabled in OSS"; its loader looks for .pb and .pbtxt
    only), and EAS's processors predate it.
    """
    tf = import_tensorflow()
    raise invalid_parameter_value(
        f"{path!r} holds {CHUNKED_SAVED_MODEL}, a SavedModel in TensorFlow's chunked format "
        "(`tf.saved_model.SaveOptions(experimental_image_format=True)`), without a "
        f"saved_model.pb. TensorFlow {tf.__version__}'s open-source build cannot read that "
        "format, and no EAS processor loads it. Save the model again without "
        "`experimental_image_format` (a graph below 2 GiB fits one saved_model.pb; keep large "
        "weights in variables), then log that folder."
    )


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
            raise _load_error(path, e) from e
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
            bundle=(variables_prefix(path), restore),
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


_TEXT_FILE_TABLE_OPS = ("InitializeTableFromTextFile", "InitializeTableFromTextFileV2")


def check_table_files_are_assets(path, meta_graph):
    """Refuses a TF2 SavedModel whose table initializer reads a file that is not its own asset.

    In a TF2 SavedModel, a vocabulary table's initializer is a function whose file name is an
    argument; the object graph binds that argument (``SavedConcreteFunction.bound_inputs``) to
    the node ``tf.saved_model.load`` feeds it from. An ``asset`` node resolves to a file under
    ``assets/`` (checked by :func:`.assets.check_assets`); anything else, e.g. a
    ``SavedConstant`` holding ``/outside/file``, would make the load read that file and the
    conversion freeze its lines into the artifact (issue 20). Checked before TensorFlow loads.
    """
    graph = meta_graph.object_graph_def
    bad = []
    for function in meta_graph.graph_def.library.function:
        name = function.signature.name
        args = [a.name for a in function.signature.input_arg]
        by_name = {n.name: n for n in function.node_def}
        for node in function.node_def:
            if node.op not in _TEXT_FILE_TABLE_OPS or len(node.input) < 2:
                continue
            source = node.input[1].split(":")[0]
            while source in by_name and by_name[source].op == "Identity":
                source = by_name[source].input[0].split(":")[0]
            if source not in args:
                continue  # a file name inside the function: the ops policy judges it
            where = f"{node.op} {node.name!r} in function {name!r}"
            saved = graph.concrete_functions.get(name)
            bound = list(saved.bound_inputs) if saved is not None else []
            index = args.index(source) - (len(args) - len(bound))
            if index < 0:
                bad.append(f"{where}: its file name is an argument no asset is bound to")
                continue
            target = graph.nodes[bound[index]] if bound[index] < len(graph.nodes) else None
            kind = target.WhichOneof("kind") if target is not None else "missing node"
            if kind != "asset":
                what = f"a {kind} ({target.constant.operation!r})" if kind == "constant" else f"a {kind}"
                bad.append(f"{where}: its file name is bound to {what}, not to an asset of the folder")
            elif target.asset.asset_file_def_index >= len(meta_graph.asset_file_def):
                bad.append(f"{where}: its asset names no AssetFileDef")
    if bad:
        listed = "\n  ".join(bad)
        raise invalid_parameter_value(
            f"The SavedModel in {path!r} fills a lookup table from a file that is not one of its "
            f"assets; nothing of it was run:\n  {listed}\nA vocabulary file must be an asset "
            "(assets/ of the folder): re-export the model from its original code "
            "(tf.lookup.TextFileInitializer on the file, then tf.saved_model.save) without "
            "editing saved_model.pb."
        )


_NO_KERNEL = re.compile(r"No OpKernel was registered to support Op '([^']+)' used by \{\{node ([^}]+)\}\}")
_NOT_REGISTERED = re.compile(r"Op type not registered '([^']+)'")


def _load_error(path, error, tf2=False):
    """The ``MlflowException`` for a folder TensorFlow's loader refused: the real cause first."""
    tf = import_tensorflow()
    text = str(error)
    missing = _NO_KERNEL.search(text)
    if missing:
        op, node = missing.groups()
        return invalid_parameter_value(
            f"The SavedModel in {path!r} cannot be converted here: its graph runs op {op!r} "
            f"(node {node.strip()!r}) at load, and TensorFlow {tf.__version__} has no CPU kernel "
            f"for {op} (e.g. the BoostedTrees ops of TF 1.x Estimators), so the converter cannot "
            "load the graph to freeze it. Deploy the original export to an EAS processor of the "
            "TensorFlow version that wrote it, or retrain the model with ops TensorFlow 2.x runs."
        )
    unknown = _NOT_REGISTERED.search(text)
    if unknown:
        return invalid_parameter_value(
            f"The SavedModel in {path!r} uses op {unknown.group(1)!r}, which TensorFlow "
            f"{tf.__version__} does not have (a custom op, or one removed since the TensorFlow "
            "that wrote it), so it cannot be loaded to be converted. Load the library that "
            "registers it (tf.load_op_library) before save_model, or export the model without it."
        )
    return invalid_parameter_value(
        f"TensorFlow cannot load the SavedModel in {path!r}: {error}. Check that the folder is "
        "complete (saved_model.pb and variables/)"
        + (" and was written by a compatible TensorFlow." if tf2 else ".")
    )


_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_VARIABLE_VALUE = "VARIABLE_VALUE"


def _checkpoint_object_graph(prefix):
    """The ``TrackableObjectGraph`` of the bundle ``prefix`` and its reader, or ``None``."""
    tf = import_tensorflow()
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    try:
        reader = tf.train.load_checkpoint(prefix)
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH_KEY))
    except Exception:  # noqa: BLE001 - no bundle, or one without an object graph: not streamed
        return None
    return graph, reader


def _streamable(object_graph):
    """Why the bundle's values cannot all be read as variables' tensors, or ``None``.

    Anything else the checkpoint restores (a mutable table's contents, a custom saveable)
    needs the loader's own restore.
    """
    for node in object_graph.nodes:
        for attribute in node.attributes:
            if attribute.name != _VARIABLE_VALUE:
                return f"the checkpoint restores {attribute.name!r} ({attribute.checkpoint_key!r}), not a variable"
        if node.registered_saver.name:
            return f"the checkpoint uses the registered saver {node.registered_saver.name!r}"
    return None


def _bundle_values(root, object_graph, reader, prefix, names):
    """``{variable name: BundleValue}`` for every variable of ``root`` named in ``names``.

    The loaded objects are matched to the checkpoint's object graph by their child names from
    the root, as ``tf.train.Checkpoint.restore`` matches them; ``None`` when a variable has no
    tensor of its own shape and dtype there.
    """
    tf = import_tensorflow()
    from mlflow_eas_savedmodel.graph.weights import BundleValue

    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    keys, seen, pending = {}, set(), [(root, 0)]
    while pending:
        obj, node_id = pending.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = object_graph.nodes[node_id]
        if isinstance(obj, tf.Variable):
            for attribute in node.attributes:
                if attribute.name == _VARIABLE_VALUE:
                    keys[id(obj.handle)] = (obj, attribute.checkpoint_key)
        children = {c.local_name: c.node_id for c in node.children}
        for local_name, child in tf.train.TrackableView.children(obj).items():
            if local_name in children:
                pending.append((child, children[local_name]))
    values = {}
    for handle_id, name in names.items():
        if handle_id not in keys:
            return None
        variable, key = keys[handle_id]
        shape = variable.shape
        if (
            key not in shapes or dtypes[key] != variable.dtype.base_dtype
            or not shape.is_fully_defined() or shape.as_list() != list(shapes[key])
        ):
            return None
        values[name] = BundleValue(prefix, key, shapes[key], dtypes[key])
    return values


def _load_tf2(path, tags):
    """``(loaded root, {variable name: BundleValue} or None, why not streamed or None)``.

    Where every value the checkpoint holds is a variable's, the functions are loaded with
    ``experimental_skip_checkpoint``: the variables are created uninitialized (no memory for
    their values) and the export reads each from the folder's ``variables/`` bundle a piece at
    a time, as for checkpoints and TF1 folders. Otherwise ``tf.saved_model.load`` restores all
    of them once.
    """
    tf = import_tensorflow()
    prefix = variables_prefix(path)
    found = _checkpoint_object_graph(prefix)
    why = "no object graph in variables/" if found is None else _streamable(found[0])
    if why is None:
        loaded = tf.saved_model.load(
            path, tags=tags, options=tf.saved_model.LoadOptions(experimental_skip_checkpoint=True)
        )
        values = _bundle_values(loaded, found[0], found[1], prefix, variable_names(loaded))
        if values is not None:
            return loaded, values, None
        why = "a variable does not match its tensor in variables/"
        del loaded
    return tf.saved_model.load(path, tags=tags), None, why


def _from_tf2_saved_model(path, meta_graph, default_signature):
    tf = import_tensorflow()
    tags = list(meta_graph.meta_info_def.tags)
    try:
        loaded, streamed, not_streamed = _load_tf2(path, tags)
    except Exception as e:  # noqa: BLE001 - the TF2 loader raises many types
        raise _load_error(path, e, tf2=True) from e
    endpoints = []
    for name in serving_signature_names(meta_graph):
        with pipeline_stage("trace", [name]):
            concrete = loaded.signatures[name]
            _, kwargs = concrete.structured_input_signature
            input_keys = sorted(kwargs)
            output_keys = sorted(concrete.structured_outputs)
        method = meta_graph.signature_def[name].method_name
        endpoints.append(Endpoint(name, concrete, input_keys, output_keys, method or None))
    serving_graph = concrete_functions_to_serving_graph(
        endpoints, variable_names(loaded), default_signature=default_signature
    )
    if streamed is not None:
        # The uninitialized variables' readers are replaced by the bundle's: never read whole.
        serving_graph.weight_values.update(
            {name: streamed[name] for name in serving_graph.weight_values if name in streamed}
        )
        serving_graph.notes.append("weights streamed from the source's variables/ bundle")
    else:
        serving_graph.notes.append(f"weights restored whole by tf.saved_model.load ({not_streamed})")
    serving_graph.reference = reference.tf2_saved_model_reference(
        path, list(meta_graph.meta_info_def.tags), endpoints
    )
    serving_graph.notes.insert(
        0,
        "re-exported TF2 SavedModel: signatures traced and frozen, resource variables -> "
        "VariableV2, function library inlined, default attrs stripped",
    )
    return serving_graph


def accepts(model):
    """A folder holding ``saved_model.pb``, ``saved_model.pbtxt`` or ``saved_model.cpb``."""
    path = as_path(model)
    return path is not None and os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in SAVED_MODEL_FILES + (CHUNKED_SAVED_MODEL,)
    )


SOURCE = Source(
    kind="saved_model",
    description="a SavedModel folder",
    options=OPTIONS,
    accepts=accepts,
    to_serving_graph=saved_model_to_serving_graph,
    path_description="a SavedModel folder (saved_model.pb or saved_model.pbtxt)",
    names_own_signatures=True,
)
