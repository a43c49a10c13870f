"""Checkpoints -> :class:`ServingGraph`: the guide's "restore, then export" recipe.

Three kinds of checkpoint, told apart by what the prefix holds:

* A ``tf.train.Saver`` checkpoint with its ``PREFIX.meta`` graph: the graph is imported into a
  fresh session (devices cleared), the variables restored, and the session exported like any
  other (:mod:`..graph.session_graph`); tensors are named by string (``inputs={"image": "x:0"}``).
* A ``tf.train.Saver`` checkpoint without ``.meta``, plus ``build_fn``: ``build_fn()`` rebuilds
  the graph (the guide's "variable define ...") in a fresh default graph; the variables it
  creates are restored by name. It returns the signature tensors, in one of three forms:
  ``(inputs, outputs)`` (one signature, like ``inputs=``/``outputs=``), a ``signatures=`` dict,
  or ``None`` when ``inputs=``/``outputs=``/``signatures=`` name the tensors.
* A TF2 object-based checkpoint (``tf.train.Checkpoint(model=model).save(prefix)``), plus
  ``build_fn``: ``build_fn()`` returns the object that was saved as ``model=`` (or as the
  checkpoint's root), built so its variables exist: a Keras model (traced like any Keras
  model, :mod:`..graph.keras_model`) or a ``tf.Module`` whose ``tf.function`` methods have an
  ``input_signature`` (each becomes a signature named after the method, ``__call__`` as
  ``serving_default``; traced and frozen by :mod:`..graph.module`).

A prefix may also be a folder with a ``checkpoint`` state file (its latest checkpoint is used).
"""

import glob
import os
import re

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph import ops_policy
from mlflow_eas_savedmodel.graph.keras_model import is_keras_model, keras_model_to_serving_graph
from mlflow_eas_savedmodel.graph.module import module_to_serving_graph
from mlflow_eas_savedmodel.graph.reference import saver_checkpoint_reference
from mlflow_eas_savedmodel.graph.serving_graph import DEFAULT_SIGNATURE_NAME
from mlflow_eas_savedmodel.graph.session_graph import reads_session, serving_graph_from_session
from mlflow_eas_savedmodel.sources.source import Source, as_path

# The SourceOptions this source takes.
OPTIONS = (
    "inputs", "outputs", "signatures", "default_signature", "signature_name", "init_op",
    "build_fn", "input_example", "allow_file_ops",
)

_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_SHARD_RE = re.compile(r"\.data-(\d{5})-of-(\d{5})$")


def checkpoint_to_serving_graph(model, options):
    """Restores the checkpoint at prefix ``model`` and converts it to a :class:`ServingGraph`.

    Args:
        model: the checkpoint prefix (``./lr_model/model.ckpt``) or a folder holding a
            ``checkpoint`` state file.
        options: the :class:`~mlflow_eas_savedmodel.sources.SourceOptions`:

            * ``inputs``, ``outputs``, ``signature_name``, ``signatures``,
              ``default_signature``, ``init_op``: as for a session
              (:func:`~mlflow_eas_savedmodel.graph.session_graph.serving_graph_from_session`);
              tensors by name (``"x:0"``) or, with ``build_fn``, as the tensors it built.
            * ``build_fn``: rebuilds the graph (Saver checkpoint without ``.meta``) or returns
              the model (TF2 ``tf.train.Checkpoint``); see the module docstring for its contract.
            * ``allow_file_ops``: keep file and network ops of a ``.meta`` graph (see
              :mod:`..graph.ops_policy`).

    Example:
        >>> import tensorflow as tf
        >>> from mlflow_eas_savedmodel.sources import SourceOptions
        >>> from mlflow_eas_savedmodel.sources.checkpoint import checkpoint_to_serving_graph
        >>> with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        ...     x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        ...     w = tf.compat.v1.get_variable("w", initializer=[[1.0], [2.0]])
        ...     y = tf.identity(x @ w, name="y")
        ...     sess.run(tf.compat.v1.global_variables_initializer())
        ...     _ = tf.compat.v1.train.Saver().save(sess, "./lr_model/model.ckpt")
        >>> serving_graph = checkpoint_to_serving_graph(
        ...     "./lr_model/model.ckpt",
        ...     SourceOptions(inputs={"image": "x:0"}, outputs={"scores": "y:0"}))
        >>> serving_graph.signatures["serving_default"].inputs
        {'image': 'x:0'}
    """
    tf = import_tensorflow()
    prefix = _resolve_prefix(model)
    reader = tf.train.load_checkpoint(prefix)
    if reader.has_tensor(_OBJECT_GRAPH_KEY):
        if options.build_fn is None:
            raise invalid_parameter_value(
                f"{prefix!r} is a TF2 object-based checkpoint (tf.train.Checkpoint): it holds "
                "values but no graph. Pass `build_fn=` returning the model it was saved from, "
                "built (e.g. `lambda: make_model()`), so the values can be restored into it."
            )
        if options.init_op is not None or options.signatures is not None:
            raise invalid_parameter_value(
                "`init_op=` and `signatures=` are for tf.train.Saver checkpoints; with a TF2 "
                "checkpoint, give the model's tf.function methods an input_signature instead."
            )
        return _from_object_checkpoint(
            prefix, options.build_fn, options.inputs, options.outputs, options.signature_name,
            options.default_signature,
        )
    return _from_saver_checkpoint(
        prefix, reader, options.build_fn, options.inputs, options.outputs, options.signature_name,
        options.signatures, options.default_signature, options.init_op, options.allow_file_ops,
        allow_ops=options.allow_ops,
    )


def _resolve_prefix(path):
    tf = import_tensorflow()
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise invalid_parameter_value(
                f"{path!r} is a folder without a 'checkpoint' state file naming a checkpoint. Pass "
                "the checkpoint prefix itself, e.g. './lr_model/model.ckpt' (the part before "
                "'.index')."
            )
        path = latest
    if not os.path.exists(path + ".index"):
        candidates = sorted(
            p[: -len(".index")] for p in glob.glob(os.path.join(os.path.dirname(path) or ".", "*.index"))
        )
        raise invalid_parameter_value(
            f"No checkpoint at prefix {path!r}: {path}.index does not exist. Pass the prefix "
            f"without a suffix{'; found: ' + str(candidates[:5]) if candidates else ''}."
        )
    shards = [_SHARD_RE.search(p) for p in glob.glob(glob.escape(path) + ".data-*-of-*")]
    shards = [m for m in shards if m]
    total = int(shards[0].group(2)) if shards else 1
    present = {int(m.group(1)) for m in shards}
    missing = [f"{path}.data-{i:05d}-of-{total:05d}" for i in range(total) if i not in present]
    if missing:
        raise invalid_parameter_value(
            f"The checkpoint {path!r} is incomplete: the data shard(s) {missing} are missing. "
            "Copy every file of the checkpoint (PREFIX.index and all PREFIX.data-*)."
        )
    return path


def _read_meta_graph(prefix, allow_file_ops, allow_ops=()):
    """The checked ``MetaGraphDef`` of ``PREFIX.meta``: refused before any of it is imported."""
    from tensorflow.core.protobuf import meta_graph_pb2

    meta_graph = meta_graph_pb2.MetaGraphDef()
    try:
        with open(prefix + ".meta", "rb") as f:
            meta_graph.ParseFromString(f.read())
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise invalid_parameter_value(
            f"Cannot read {prefix + '.meta'!r}: {e}. The file is damaged; save the checkpoint again."
        ) from e
    ops_policy.check_meta_graph(
        meta_graph, f"The checkpoint graph {prefix + '.meta'!r}",
        files_root=os.path.dirname(os.path.abspath(prefix)), allow_file_ops=allow_file_ops,
        allow_ops=allow_ops,
    )
    return meta_graph


def _from_saver_checkpoint(
    prefix, reader, build_fn, inputs, outputs, signature_name, signatures, default_signature, init_op,
    allow_file_ops=False,
    allow_ops=(),
):
    tf = import_tensorflow()

    graph = tf.Graph()
    built = None
    with graph.as_default():
        if build_fn is not None:
            built = build_fn()
            variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
            saver = tf.compat.v1.train.Saver(var_list=variables) if variables else None
        elif os.path.exists(prefix + ".meta"):
            saver = tf.compat.v1.train.import_meta_graph(
                _read_meta_graph(prefix, allow_file_ops, allow_ops), clear_devices=True
            )
        else:
            raise invalid_parameter_value(
                f"The checkpoint {prefix!r} has no {os.path.basename(prefix)}.meta graph. Pass "
                "`build_fn=` that rebuilds the graph (creates the variables with their training "
                "names) and returns (inputs, outputs), e.g. `build_fn=lambda: build(...)`."
            )
    _check_variables(prefix, reader, graph)
    if build_fn is not None:
        inputs, outputs, signatures = _signatures_from_build_fn(built, inputs, outputs, signatures)

    sess = tf.compat.v1.Session(graph=graph)
    serving_graph = None

    def restore():
        if saver is not None:
            try:
                saver.restore(sess, prefix)
            except (tf.errors.OpError, ValueError) as e:
                raise invalid_parameter_value(
                    f"Restoring the checkpoint {prefix!r} failed: {e}"
                ) from e

    try:
        tables = graph.get_collection(tf.compat.v1.GraphKeys.TABLE_INITIALIZERS)
        if tables:
            sess.run(tables)
        # The variables are not restored: the export reads them from the checkpoint piece by
        # piece (restore() only for a variable it holds under another name).
        serving_graph = serving_graph_from_session(
            sess,
            inputs=inputs,
            outputs=outputs,
            signature_name=signature_name,
            signatures=signatures,
            default_signature=default_signature,
            init_op=init_op,
            bundle=(prefix, restore),
        )
    finally:
        if serving_graph is None or not reads_session(serving_graph):
            sess.close()
    serving_graph.reference = saver_checkpoint_reference(graph, saver, prefix, serving_graph.signatures)
    serving_graph.source = "checkpoint"
    return serving_graph


def _check_variables(prefix, reader, graph):
    """Every variable of the graph must be in the checkpoint with the same shape."""
    tf = import_tensorflow()
    shapes = reader.get_variable_to_shape_map()
    missing, mismatched = [], []
    for variable in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES):
        # A partition (fixed_size_partitioner) is saved as a slice of its full variable.
        info = getattr(variable, "_save_slice_info", None)
        name = info.full_name if info is not None else variable.op.name
        shape = list(info.full_shape) if info is not None else variable.shape
        if name not in shapes:
            missing.append(name)
        elif info is not None or variable.shape.is_fully_defined():
            if list(shape) != list(shapes[name]):
                mismatched.append(f"{name}: graph {list(shape)}, checkpoint {shapes[name]}")
    if missing:
        raise invalid_parameter_value(
            f"The variables {missing[:10]} are not in the checkpoint {prefix!r}, which holds "
            f"{sorted(shapes)[:10]}. Create the variables with the names they had in training "
            "(same variable scopes)."
        )
    if mismatched:
        raise invalid_parameter_value(
            f"Variables of the graph and the checkpoint {prefix!r} differ in shape: {mismatched[:5]}. "
            "Rebuild the graph as it was trained."
        )


def _signatures_from_build_fn(built, inputs, outputs, signatures):
    """Applies ``build_fn``'s return value: ``(inputs, outputs)``, a signatures dict or None."""
    if built is None:
        return inputs, outputs, signatures
    given = inputs is not None or outputs is not None or signatures is not None
    if given:
        raise invalid_parameter_value(
            "`build_fn` returned signature tensors and `inputs=`/`outputs=`/`signatures=` were "
            "passed too. Do one: return them from build_fn, or return None and pass them."
        )
    if isinstance(built, tuple) and len(built) == 2 and all(isinstance(d, dict) for d in built):
        return built[0], built[1], None
    if isinstance(built, dict) and all(isinstance(v, dict) or hasattr(v, "method_name") for v in built.values()):
        return None, None, built
    raise invalid_parameter_value(
        f"`build_fn` returned a {type(built).__name__}. For a tf.train.Saver checkpoint it must "
        "return (inputs_dict, outputs_dict), a signatures dict {name: {'inputs': ..., "
        "'outputs': ...}}, or None."
    )


def _from_object_checkpoint(prefix, build_fn, inputs, outputs, signature_name, default_signature):
    tf = import_tensorflow()
    model = build_fn()
    if model is None or not hasattr(model, "_track_trackable") and not is_keras_model(model):
        raise invalid_parameter_value(
            f"`build_fn` returned {type(model).__name__}; for a TF2 checkpoint it must return the "
            "model that was saved (a Keras model or a tf.Module), with its variables built."
        )
    problems = []
    for make in (lambda: tf.train.Checkpoint(model=model), lambda: tf.train.Checkpoint(model)):
        status = make().restore(prefix)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            problems.append(str(e))
            continue
        status.expect_partial()  # optimizer slots and the like are not needed to serve
        break
    else:
        raise invalid_parameter_value(
            f"The model from `build_fn` does not match the checkpoint {prefix!r} (neither as "
            f"`tf.train.Checkpoint(model=...)` nor as its root): {problems[0][:500]}. Build the "
            "same architecture (same layers, built with the same shapes) as when it was saved."
        )
    if is_keras_model(model):
        serving_graph = keras_model_to_serving_graph(
            model, inputs=inputs, outputs=outputs, signature_name=signature_name or DEFAULT_SIGNATURE_NAME
        )
    else:
        if inputs is not None or outputs is not None:
            raise invalid_parameter_value(
                "`inputs=`/`outputs=` cannot rename a tf.Module's tensors: name its inputs with "
                "tf.TensorSpec(name=...) and return a dict {key: tensor} from the tf.function."
            )
        serving_graph = module_to_serving_graph(
            model, signature_name, default_signature, origin=" from `build_fn`"
        )
    serving_graph.source = "checkpoint"
    return serving_graph


def accepts(model):
    """A path with ``PREFIX.index`` or ``PREFIX.meta``, or a folder (not a SavedModel's).

    Raises:
        MlflowException: for a legacy SessionBundle folder, which looks like a checkpoint
            folder but is not one.
    """
    path = as_path(model)
    if path is None:
        return False
    _refuse_session_bundle(path)
    return os.path.exists(path + ".index") or os.path.exists(path + ".meta") or os.path.isdir(path)


def _refuse_session_bundle(path):
    """A legacy SessionBundle (``export.meta`` + ``export-?????-of-?????``, TF 0.x-1.x
    ``session_bundle`` exporter) looks like a checkpoint folder but is neither that nor a
    SavedModel; EAS's processors load only SavedModels."""
    if not os.path.isdir(path):
        return
    folders = [path] + [os.path.join(path, d) for d in sorted(os.listdir(path)) if d.isdigit()]
    for folder in folders:
        if os.path.exists(os.path.join(folder, "export.meta")):
            raise invalid_parameter_value(
                f"{folder!r} is a legacy SessionBundle export (export.meta + export-*-of-*), the "
                "format of TensorFlow's retired session_bundle exporter; neither EAS nor this "
                "package loads it. Load it into a session and log that session instead: "
                "`saver = tf.compat.v1.train.import_meta_graph('export.meta'); "
                "saver.restore(sess, 'export'); log_model(sess, inputs={...}, outputs={...})` "
                "with the input and output tensors of its signatures."
            )


SOURCE = Source(
    kind="checkpoint",
    description="a tf.train.Saver checkpoint prefix",
    options=OPTIONS,
    accepts=accepts,
    to_serving_graph=checkpoint_to_serving_graph,
    path_description="a checkpoint prefix (PREFIX.index)",
)
