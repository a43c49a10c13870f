"""A TF1 graph in a live session -> :class:`ServingGraph`, the machinery of every TF1 source.

The session source, the checkpoint source (a Saver checkpoint restored into a fresh session)
and the SavedModel source (a TF1 folder loaded into one) all end here. The signatures are
resolved and checked by :mod:`.signatures`; then the session is frozen (every variable read
becomes a stand-in constant, only the part of the graph the signatures and init ops need is
kept) and the export writes the weights as ``VariableV2``, reading them from the session (or
from a tensor bundle, ``bundle=``) a bounded piece at a time: TF 2.21's ``tf.compat.v1`` graphs
use resource variables (``VarHandleOp.debug_name``), which no EAS runtime knows. Node names,
and so the user's tensor names, are kept. To read a large variable in pieces and to check that
every variable is initialised, a few small ops are added to the session's graph under
``mlflow_eas_savedmodel_export/`` (not when the graph is finalized).

Lookup tables: a table filled from a vocabulary file (``index_table_from_file``) would look for
that file, by its absolute path, on the EAS machine; its contents are read from the live session
instead and the table is re-created with ``InitializeTableV2`` from constants. Tables that share
a ``shared_name`` (TF1's ``index_table_from_file`` names every table after its file, so a wide &
deep model's two parts hold one table twice) are ONE resource at load; TF 1.12 and 1.14 refuse
a second ``InitializeTableV2`` of a filled table ("Table already initialized", where the text
file initializer they replace tolerated it), so only the first initializer of each shared table
is kept and the others become ``NoOp``\s that wait for it (measured in the differential table,
``tests/runtimes/test_differential_table.py``).
"""

import logging

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.freeze import freeze_session
from mlflow_eas_savedmodel.graph.op_facts import VARIABLE_OPS
from mlflow_eas_savedmodel.graph.reference import session_reference
from mlflow_eas_savedmodel.graph.serving_graph import ServingGraph
from mlflow_eas_savedmodel.graph.signatures import (
    check_feeds,
    collect_signatures,
    pick_default_signature,
)
from mlflow_eas_savedmodel.graph.tables import initialize_from_constants
from mlflow_eas_savedmodel.graph.weights import SessionVariableValue, bundle_values

_logger = logging.getLogger(__name__)

# Ops that (re)write a variable: an init op reaching them would overwrite the restored weights.
_VARIABLE_WRITE_OPS = ("Assign", "AssignVariableOp")
_FILE_TABLE_INIT_OPS = ("InitializeTableFromTextFileV2", "InitializeTableFromTextFile")
_TABLE_INIT_OPS = ("InitializeTableV2", "InitializeTable", "LookupTableImportV2", "LookupTableImport")
_SHARED_TABLE_OPS = ("HashTableV2", "HashTable")


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
    """Freezes a ``tf.compat.v1.Session`` into a :class:`ServingGraph`.

    Args:
        model: the session; its variables must hold the values to serve (unless ``bundle``).
        inputs: ``{key: tensor | "name:0" | TensorInfo}`` of the one signature (simple_save).
        outputs: same form, the one signature's outputs.
        signature_name: the name of that one signature (default ``serving_default``).
        signatures: ``{name: {"inputs": {...}, "outputs": {...}, "method": "predict"}}`` (or
            ``{name: SignatureDef}``); ``method`` is ``predict`` (default), ``classify``,
            ``regress`` or a full method-name constant (see :mod:`.signatures`).
        default_signature: the signature requests use when they name none (default
            ``serving_default`` when present, else the only or first signature).
        init_op: an op (or name, or list) to run at load, e.g. the guide's ``legacy_init_op``.
            Without it, the graph's table initializers are used.
        bundle: ``(prefix, restore)`` for the checkpoint and SavedModel sources: the variables
            are read from the tensor bundle at ``prefix`` (piece by piece, at export), so the
            session need not hold them; ``restore()`` fills the session with every variable
            and is called only when the bundle lacks one under its own name (a ``Saver``
            that renamed variables), whose value is then read from the session.

    Returns:
        The :class:`ServingGraph`; ``notes`` says what the conversion changed, ``reference``
        runs the live session.
    """
    tf = import_tensorflow()
    graph = model.graph
    specs = collect_signatures(graph, inputs, outputs, signature_name, signatures)
    default = pick_default_signature(specs, default_signature)
    for name, (spec, input_ops, output_ops) in specs.items():
        check_feeds(name, spec, input_ops, output_ops)
    init_ops, init_notes = _init_ops(graph, init_op)

    keep = {n.split(":")[0] for spec, _, _ in specs.values() for n in (*spec.inputs.values(), *spec.outputs.values())}
    keep.update(op.name for op in init_ops)
    try:
        graph_def, weights, values = freeze_session(
            model, sorted(keep), lambda e: _uninitialized_error(model, e), signatures=sorted(specs)
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
    notes.extend(one_initializer_per_shared_table(graph_def))
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
                raise invalid_parameter_value(
                    f"`init_op={ref!r}` is not an op of the session's graph. Pass the op "
                    "(e.g. `tf.group(tf.compat.v1.tables_initializer(), name='legacy_init_op')`) "
                    "or its name."
                ) from None
            continue
        op = ref if isinstance(ref, tf.Operation) else getattr(ref, "op", None)
        if op is None or op.graph is not graph:
            raise invalid_parameter_value(
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
        return invalid_parameter_value(
            f"The session's variables {missing[:10]} are not initialised. Run "
            "`sess.run(tf.compat.v1.global_variables_initializer())` or restore a checkpoint "
            "(`saver.restore(sess, prefix)`) before logging."
        )
    return invalid_parameter_value(
        f"Reading the session's variables failed: {getattr(error, 'message', error)}"
    )


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


def one_initializer_per_shared_table(graph_def):
    """Keeps one initializer per shared ``HashTable(V2)`` resource; the others wait for it.

    Two table nodes with one non-empty ``(container, shared_name)`` are one resource in the
    session, so every initializer after the first fills a table that is already full: TF 1.15+
    accept that when the entries are the same, TF 1.12 and 1.14 fail the whole init op. In the
    source session the tables were that one resource too, so the entries are the first
    initializer's in every runtime. The others keep their names (``legacy_init_op`` groups
    name them) as ``NoOp``\s with a control edge to the first; their constants are dropped.
    """
    tables = {}
    for node in graph_def.node:
        if node.op in _SHARED_TABLE_OPS and node.attr["shared_name"].s:
            tables[node.name] = (node.attr["container"].s, node.attr["shared_name"].s)
    if len(set(tables.values())) == len(tables):
        return []
    first, merged, orphans = {}, [], set()
    for node in graph_def.node:
        if node.op not in _TABLE_INIT_OPS or not node.input:
            continue
        key = tables.get(node.input[0].split(":")[0].lstrip("^"))
        if key is None:
            continue
        if key not in first:
            first[key] = node.name
            continue
        controls = [i for i in node.input if i.startswith("^")]
        orphans.update(i.split(":")[0] for i in node.input[1:] if not i.startswith("^"))
        name = node.name
        node.Clear()
        node.name, node.op = name, "NoOp"
        node.input.extend([f"^{first[key]}", *controls])
        merged.append(name)
    if not merged:
        return []
    _drop_unused_constants(graph_def, orphans)
    return [
        f"tables sharing a shared_name: one initializer each, {sorted(merged)[:5]} wait for it "
        "(TF 1.12/1.14 refuse a second initialization)"
    ]


def _drop_unused_constants(graph_def, candidates):
    """Drops the ``Const`` nodes of ``candidates`` (the merged initializers' keys and values)
    that nothing reads any more."""
    used = {i.lstrip("^").split(":")[0] for n in graph_def.node for i in n.input}
    for index in reversed(range(len(graph_def.node))):
        node = graph_def.node[index]
        if node.op == "Const" and node.name in candidates and node.name not in used:
            del graph_def.node[index]
