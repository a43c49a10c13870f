"""TF1 sessions -> :class:`ServingGraph`: ``simple_save`` and ``SavedModelBuilder`` semantics.

``inputs=``/``outputs=`` give one SignatureDef (``serving_default`` unless ``signature_name=``),
as ``tf.compat.v1.saved_model.simple_save`` does; ``signatures=`` gives several, as a
``SavedModelBuilder`` ``signature_def_map`` does::

    signatures={
        "predict_images": {"inputs": {"images": x}, "outputs": {"scores": y}, "method": "predict"},
        "lookup": {"inputs": {"words": "words:0"}, "outputs": {"ids": ids}},
    }

Tensors are ``tf.Tensor`` objects of the session's graph, names (``"x:0"``), or ``TensorInfo``
protos (what ``build_tensor_info`` returns); a value may also be a ``SignatureDef`` proto.

The session is frozen (every variable read becomes a stand-in constant, only the part of the
graph the signatures and init ops need is kept) and the export writes the weights as
``VariableV2``, reading them from the session a bounded piece at a time: TF 2.21's
``tf.compat.v1`` graphs use resource variables (``VarHandleOp.debug_name``), which no EAS
runtime knows. Node names, and so the user's tensor names, are kept. To read a large variable
in pieces and to check that every variable is initialised, a few small ops are added to the
session's graph under ``mlflow_eas_savedmodel_export/`` (not when the graph is finalized).

Lookup tables: a table filled from a vocabulary file (``index_table_from_file``) would look for
that file, by its absolute path, on the EAS machine; its contents are read from the live session
instead and the table is re-created with ``InitializeTableV2`` from constants.
"""

import logging

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid
from mlflow_eas_savedmodel.graph.freeze import VARIABLE_OPS, freeze_session
from mlflow_eas_savedmodel.graph.serving_graph import (
    DEFAULT_SIGNATURE_NAME,
    METHOD_ALIASES,
    ServingGraph,
    SignatureSpec,
)
from mlflow_eas_savedmodel.graph.tables import initialize_from_constants
from mlflow_eas_savedmodel.graph.weights import SessionVariableValue, bundle_values
from mlflow_eas_savedmodel.sources.reference import session_reference

_logger = logging.getLogger(__name__)

_PLACEHOLDER_OPS = ("Placeholder", "PlaceholderV2")
# Ops that (re)write a variable: an init op reaching them would overwrite the restored weights.
_VARIABLE_WRITE_OPS = ("Assign", "AssignVariableOp")
_SIGNATURE_FIELDS = ("inputs", "outputs", "method", "method_name")
# Ops that change variable state; on a serving path they make answers depend on past requests.
_STATE_UPDATE_OPS = frozenset(
    "Assign AssignAdd AssignSub AssignVariableOp AssignAddVariableOp AssignSubVariableOp CountUpTo "
    "ResourceCountUpTo ScatterUpdate ScatterAdd ScatterSub ScatterMul ScatterDiv ScatterMin "
    "ScatterMax ScatterNdUpdate ScatterNdAdd ScatterNdSub ResourceScatterUpdate ResourceScatterAdd "
    "ResourceScatterSub ResourceScatterMul ResourceScatterDiv ResourceScatterMin ResourceScatterMax "
    "ResourceScatterNdUpdate ResourceScatterNdAdd ResourceScatterNdSub".split()
)
_STATE_UPDATE_PREFIXES = ("Apply", "ResourceApply", "SparseApply", "ResourceSparseApply")
_FILE_TABLE_INIT_OPS = ("InitializeTableFromTextFileV2", "InitializeTableFromTextFile")


def session_to_serving_graph(
    model,
    inputs=None,
    outputs=None,
    signature_name=None,
    signatures=None,
    default_signature=None,
    init_op=None,
    input_example=None,
):
    """Freezes a ``tf.compat.v1.Session`` into a :class:`ServingGraph`.

    Args:
        model: the session; its variables must hold the values to serve.
        inputs: ``{key: tensor | "name:0" | TensorInfo}`` of the one signature (simple_save).
        outputs: same form, the one signature's outputs.
        signature_name: the name of that one signature (default ``serving_default``).
        signatures: ``{name: {"inputs": {...}, "outputs": {...}, "method": "predict"}}`` (or
            ``{name: SignatureDef}``); ``method`` is ``predict`` (default), ``classify``,
            ``regress`` or a full method-name constant.
        default_signature: the signature requests use when they name none (default
            ``serving_default`` when present, else the only or first signature).
        init_op: an op (or name, or list) to run at load, e.g. the guide's ``legacy_init_op``.
            Without it, the graph's table initializers are used.
        input_example: not used here (the flavor stores it as the MLmodel input example).

    Returns:
        The :class:`ServingGraph`; ``notes`` says what the conversion changed.

    Example:
        >>> with tf.compat.v1.Session(graph=g) as sess:
        ...     serving_graph = session_to_serving_graph(
        ...         sess, inputs={"image": x}, outputs={"scores": y})
    """
    del input_example
    return serving_graph_from_session(
        model, inputs, outputs, signature_name, signatures, default_signature, init_op
    )


def serving_graph_from_session(
    model,
    inputs=None,
    outputs=None,
    signature_name=None,
    signatures=None,
    default_signature=None,
    init_op=None,
    bundle=None,
):
    """:func:`session_to_serving_graph`, the values read from a tensor bundle if one is given.

    Args:
        bundle: ``(prefix, restore)`` for the checkpoint and SavedModel sources: the variables
            are read from the tensor bundle at ``prefix`` (piece by piece, at export), so the
            session need not hold them; ``restore()`` fills the session with every variable
            and is called only when the bundle lacks one under its own name (a ``Saver``
            that renamed variables), whose value is then read from the session.
    """
    tf = import_tensorflow()
    graph = model.graph
    specs = collect_signatures(graph, inputs, outputs, signature_name, signatures)
    default = pick_default_signature(specs, default_signature)
    for name, (spec, input_ops, output_ops) in specs.items():
        _check_feeds(name, spec, input_ops, output_ops)
    init_ops, init_notes = _init_ops(graph, init_op)

    keep = {n.split(":")[0] for spec, _, _ in specs.values() for n in (*spec.inputs.values(), *spec.outputs.values())}
    keep.update(op.name for op in init_ops)
    try:
        graph_def, weights, values = freeze_session(
            model, sorted(keep), lambda e: _uninitialized_error(model, e)
        )
    except tf.errors.OpError as e:
        raise _uninitialized_error(model, e) from e
    if bundle is not None:
        prefix, restore = bundle
        from_bundle = bundle_values(prefix, graph, list(values))
        if len(from_bundle) < len(values):
            restore()
        values.update(from_bundle)
    _check_initialized(model, {n: v for n, v in values.items() if isinstance(v, SessionVariableValue)})

    notes = list(init_notes)
    notes.extend(_replace_file_tables(model, graph_def))
    if any(graph.get_operation_by_name(name).type == "VarHandleOp" for name in weights):
        notes.append("resource variables -> VariableV2")
    if any(n.device for n in graph_def.node):
        notes.append("cleared device placements")
    for note in notes:
        _logger.info("Session export: %s", note)
    return ServingGraph(
        graph_def=graph_def,
        signatures={name: spec for name, (spec, _, _) in specs.items()},
        default_signature=default,
        weights=weights,
        weight_values=values,
        init_ops=[op.name for op in init_ops],
        source="session",
        notes=notes,
        reference=session_reference(model, {name: spec for name, (spec, _, _) in specs.items()}),
    )


def reads_session(serving_graph):
    """Whether the export will read values from a session (which must stay open until then)."""
    return any(isinstance(v, SessionVariableValue) for v in serving_graph.weight_values.values())


def collect_signatures(graph, inputs, outputs, signature_name, signatures):
    """``{name: (SignatureSpec, input ops by tensor name, output tensors)}`` checked against ``graph``.

    ``inputs=``/``outputs=`` (one signature) and ``signatures=`` (several) end up in one map.
    """
    raw = {}
    if signatures is not None:
        if not isinstance(signatures, dict):
            raise invalid(
                "`signatures=` must be a dict {name: {'inputs': {...}, 'outputs': {...}}}, got "
                f"{type(signatures).__name__}."
            )
        raw.update(signatures)
    if signature_name is not None and signature_name in raw:
        raise invalid(
            f"The signature name {signature_name!r} is used twice: as `signature_name=` and as a "
            "key of `signatures=`. Give every signature one unique name (drop `signature_name=` "
            "and put all signatures in `signatures=`)."
        )
    if inputs is not None or outputs is not None:
        name = signature_name or DEFAULT_SIGNATURE_NAME
        if name in raw:
            raise invalid(
                f"The signature name {name!r} is used twice: by `inputs=`/`outputs=` and as a key "
                "of `signatures=`. Pass `signature_name='another_name'` or put both in "
                "`signatures=`."
            )
        raw[name] = {"inputs": inputs, "outputs": outputs}
    elif signature_name is not None:
        raise invalid(
            f"`signature_name={signature_name!r}` names the signature made of `inputs=` and "
            "`outputs=`, which are missing. Pass them, or use `default_signature=` to pick one "
            "of `signatures=`."
        )
    if not raw:
        raise invalid(
            "The signature map is empty: pass `inputs={'x': x}, outputs={'y': y}` or "
            "`signatures={'serving_default': {'inputs': {...}, 'outputs': {...}}}`."
        )
    return {name: _signature(graph, name, value) for name, value in raw.items()}


def _signature(graph, name, value):
    if not isinstance(name, str) or not name.strip():
        raise invalid(f"Signature name {name!r} is empty or not a string. Name every signature.")
    from_proto = hasattr(value, "method_name") and hasattr(value, "inputs")
    if from_proto:  # a SignatureDef proto
        value = {
            "inputs": dict(value.inputs),
            "outputs": dict(value.outputs),
            "method": value.method_name or "predict",
        }
    if not isinstance(value, dict):
        raise invalid(
            f"Signature {name!r} must be a dict {{'inputs': {{...}}, 'outputs': {{...}}, "
            f"'method': 'predict'}} or a SignatureDef, got {type(value).__name__}."
        )
    unknown = sorted(set(value) - set(_SIGNATURE_FIELDS))
    if unknown:
        raise invalid(
            f"Signature {name!r} has unknown fields {unknown}; it takes {list(_SIGNATURE_FIELDS[:3])}."
        )
    method = value.get("method", value.get("method_name")) or "predict"
    method_name = METHOD_ALIASES.get(method, method)
    if method_name not in METHOD_ALIASES.values():
        raise invalid(
            f"Signature {name!r} has method {method!r}. Use 'predict', 'classify' or 'regress' "
            f"(or {sorted(METHOD_ALIASES.values())})."
        )
    # A SignatureDef read from a folder may take no inputs (constants, a model version): kept.
    input_tensors = _tensors(graph, name, "inputs", value.get("inputs"), allow_empty=from_proto)
    output_tensors = _tensors(graph, name, "outputs", value.get("outputs"))
    spec = SignatureSpec(
        inputs={k: t.name for k, t in input_tensors.items()},
        outputs={k: t.name for k, t in output_tensors.items()},
        method_name=method_name,
    )
    return spec, {t.name: t.op for t in input_tensors.values()}, list(output_tensors.values())


def _tensors(graph, signature, what, mapping, allow_empty=False):
    if allow_empty and isinstance(mapping, dict) and not mapping:
        return {}
    if not isinstance(mapping, dict) or not mapping:
        raise invalid(
            f"Signature {signature!r} has no {what}: pass `{what}=` as a non-empty dict "
            f"{{key: tensor or 'name:0'}}."
        )
    resolved, seen = {}, {}
    for key, ref in mapping.items():
        if not isinstance(key, str) or not key.strip():
            raise invalid(
                f"Signature {signature!r} has an empty or non-string {what[:-1]} key {key!r}. "
                "Keys must be non-empty names such as 'image'."
            )
        tensor = _tensor(graph, signature, what, key, ref)
        if what == "inputs" and tensor.name in seen:
            raise invalid(
                f"Signature {signature!r} maps the input keys {seen[tensor.name]!r} and {key!r} to "
                f"the same tensor {tensor.name!r}. Give each input tensor one key."
            )
        seen[tensor.name] = key
        resolved[key] = tensor
    return resolved


def _tensor(graph, signature, what, key, ref):
    tf = import_tensorflow()
    where = f"Signature {signature!r} {what[:-1]} {key!r}"
    if isinstance(ref, tf.Operation):
        ref = ref.outputs[0] if len(ref.outputs) == 1 else ref.name
    if isinstance(ref, tf.Variable):
        raise invalid(
            f"{where} is the variable {ref.name!r}. Pass a tensor that reads it (e.g. "
            "`tf.identity(v)`) or the tensor computed from it."
        )
    if hasattr(ref, "graph") and hasattr(ref, "op"):
        if ref.graph is not graph:
            raise invalid(
                f"{where} is the tensor {ref.name!r} of another graph than the session's. Build "
                "the model in the session's graph (`with sess.graph.as_default(): ...`) or pass "
                "the tensor of that graph."
            )
        return ref
    name = ref if isinstance(ref, str) else getattr(ref, "name", None)
    if not isinstance(name, str) or not name:
        raise invalid(
            f"{where} is a {type(ref).__name__}; pass a tf.Tensor of the session's graph, a "
            "tensor name such as 'x:0', or a TensorInfo."
        )
    if getattr(ref, "coo_sparse", None) is not None and ref.WhichOneof("encoding") != "name":
        raise invalid(f"{where} is a sparse or composite tensor; only dense tensors can be served.")
    if ":" not in name:
        name += ":0"
    try:
        return graph.get_tensor_by_name(name)
    except (KeyError, ValueError):
        similar = sorted(op.name for op in graph.get_operations() if op.type in _PLACEHOLDER_OPS)
        raise invalid(
            f"{where} names the tensor {name!r}, which is not in the session's graph. Use a name "
            f"like 'x:0' (op name, colon, output index); the graph's placeholders are {similar[:20]}."
        ) from None


def pick_default_signature(names, default_signature):
    """``default_signature`` checked against ``names``; if ``None``, ``serving_default`` when
    present, else the first of ``names`` (in their order)."""
    if default_signature is None:
        if DEFAULT_SIGNATURE_NAME in names:
            return DEFAULT_SIGNATURE_NAME
        return next(iter(names))
    if default_signature not in names:
        raise invalid(
            f"`default_signature={default_signature!r}` is not one of the signatures "
            f"{sorted(names)}. Pick one of those."
        )
    return default_signature


def _check_feeds(signature, spec, input_ops, output_tensors):
    """Every placeholder an output needs must be an input of its signature (or it cannot run).

    One walk for all outputs: what an earlier output reached without error needs no second visit.
    """
    fed = {op.name for op in input_ops.values()}
    seen = set()
    for output in output_tensors:
        stack = [output.op]
        while stack:
            op = stack.pop()
            if op.name in seen:
                continue
            seen.add(op.name)
            if op.name in fed:
                continue
            if op.type in _STATE_UPDATE_OPS or op.type.startswith(_STATE_UPDATE_PREFIXES):
                target = op.inputs[0].op.name if op.inputs else "?"
                raise invalid(
                    f"Signature {signature!r} updates a variable on its serving path: node "
                    f"{op.name!r} ({op.type}) writes {target!r}. Stateful serving graphs are not "
                    "supported: the export freezes variables into weights restored at every load, "
                    "and EAS runs several workers, so the update would be lost and each worker "
                    "would answer differently. Serve a graph without the update (keep it in the "
                    "training graph, or compute the state outside the model)."
                )
            if op.type in _PLACEHOLDER_OPS:
                key = next(k for k, t in spec.outputs.items() if t == output.name)
                raise invalid(
                    f"Signature {signature!r}: output {key!r} ({output.name}) depends on the "
                    f"placeholder {op.name!r}, which is not an input of this signature. Add it to "
                    f"the signature's inputs, e.g. {{'{op.name}': '{op.name}:0'}}."
                )
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)


def _init_ops(graph, init_op):
    """The ops to run at load and notes on what was dropped from them."""
    tf = import_tensorflow()
    if init_op is None:
        tables = graph.get_collection(tf.compat.v1.GraphKeys.TABLE_INITIALIZERS)
        return [t if isinstance(t, tf.Operation) else t.op for t in tables], []
    refs = init_op if isinstance(init_op, (list, tuple)) else [init_op]
    ops = []
    for ref in refs:
        if isinstance(ref, str):
            try:
                ops.append(graph.as_graph_element(ref.split(":")[0]))
            except (KeyError, ValueError):
                raise invalid(
                    f"`init_op={ref!r}` is not an op of the session's graph. Pass the op "
                    "(e.g. `tf.group(tf.compat.v1.tables_initializer(), name='legacy_init_op')`) "
                    "or its name."
                ) from None
            continue
        op = ref if isinstance(ref, tf.Operation) else getattr(ref, "op", None)
        if op is None or op.graph is not graph:
            raise invalid(
                f"`init_op=` {getattr(ref, 'name', ref)!r} is not an op of the session's graph. "
                "Create it in that graph."
            )
        ops.append(op)
    return _without_variable_initializers(ops)


def _without_variable_initializers(ops):
    """Drops variable (re)initialisation from init ops: at load it would overwrite the weights.

    The guide's ``legacy_init_op`` only initialises tables, but code often groups
    ``global_variables_initializer()`` in too; a ``NoOp`` group is expanded into its parts so
    the table initializers stay.
    """
    kept, dropped = [], []

    def writes_variable(op, seen):
        if op.name in seen:
            return False
        seen.add(op.name)
        if op.type in _VARIABLE_WRITE_OPS and op.inputs and op.inputs[0].op.type in VARIABLE_OPS:
            return True
        return any(writes_variable(o, seen) for o in (*op.control_inputs, *(t.op for t in op.inputs)))

    def visit(op):
        if not writes_variable(op, set()):
            kept.append(op)
        elif op.type == "NoOp":
            for dependency in op.control_inputs:
                visit(dependency)
        else:
            dropped.append(op.name)

    for op in ops:
        visit(op)
    notes = [
        f"init_op: dropped variable initializers {sorted(dropped)[:5]} (weights are restored "
        "from variables/)"
    ] if dropped else []
    return kept, notes


def _check_initialized(sess, values):
    """Fails now, not in the middle of the write, when a variable the graph needs is not set.

    ``VarIsInitializedOp``/``IsVariableInitialized`` read no value; they are added to the
    session's graph only when it is not finalized (a finalized graph is checked by the write).
    """
    tf = import_tensorflow()
    graph = sess.graph
    if not values or graph.finalized:
        return
    with graph.as_default(), graph.name_scope("mlflow_eas_savedmodel_export"):
        probes = []
        for value in values.values():
            handle = value.op.outputs[0]
            if value.op.type == "VarHandleOp":
                probes.append(tf.raw_ops.VarIsInitializedOp(resource=handle))
            else:
                probes.append(tf.raw_ops.IsVariableInitialized(ref=handle))
    try:
        initialized = sess.run(probes)
    except tf.errors.OpError as e:
        raise _uninitialized_error(sess, e) from e
    if not all(initialized):
        raise _uninitialized_error(sess, None)


def _uninitialized_error(sess, error):
    """The user-facing error for a freeze that could not read variables, naming them."""
    tf = import_tensorflow()
    missing = []
    for op in sess.graph.get_operations():
        if op.type in ("VariableV2", "Variable"):
            probe = op.outputs[0]
        elif op.type == "VarHandleOp":
            probe = next((c.outputs[0] for c in op.outputs[0].consumers() if c.type == "ReadVariableOp"), None)
        else:
            continue
        if probe is None:
            continue
        try:
            sess.run(probe)
        except tf.errors.OpError:
            missing.append(op.name)
    if missing:
        return invalid(
            f"The session's variables {missing[:10]} are not initialised. Run "
            "`sess.run(tf.compat.v1.global_variables_initializer())` or restore a checkpoint "
            "(`saver.restore(sess, prefix)`) before logging."
        )
    return invalid(f"Reading the session's variables failed: {getattr(error, 'message', error)}")


def _replace_file_tables(sess, graph_def):
    """Vocabulary-file tables -> tables initialised from constants read out of ``sess``."""
    tf = import_tensorflow()
    by_name = {n.name: n for n in graph_def.node}
    changed = []
    for node in list(graph_def.node):
        if node.op not in _FILE_TABLE_INIT_OPS:
            continue
        table_node = by_name[node.input[0].split(":")[0]]
        table_op = sess.graph.get_operation_by_name(table_node.name)
        key_dtype = tf.as_dtype(table_node.attr["key_dtype"].type)
        value_dtype = tf.as_dtype(table_node.attr["value_dtype"].type)
        with sess.graph.as_default():
            exported = tf.raw_ops.LookupTableExportV2(
                table_handle=table_op.outputs[0], Tkeys=key_dtype, Tvalues=value_dtype
            )
        keys, values = sess.run(exported)
        control = [i for i in node.input if i.startswith("^")]
        initialize_from_constants(
            graph_def, node, node.input[0], node.name, keys, values, key_dtype, value_dtype, control
        )
        changed.append(table_node.name)
    return [f"vocabulary-file tables {changed} -> InitializeTableV2 from constants"] if changed else []
