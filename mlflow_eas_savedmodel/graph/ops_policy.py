"""Which ops a model may contain: no file system, no network, no Python.

A model source is untrusted, and TensorFlow runs parts of a SavedModel while it loads it (the
TF1 ``main_op``/``legacy_init_op``, the Saver's restore op, TF2 initializer functions) and the
rest at every request. An op such as ``ReadFile("/etc/passwd")`` in a signature's outputs hands
the serving machine's files to any client; ``WriteFile`` in a ``main_op`` writes at every load;
``PyFunc`` runs Python that EAS does not have. So every graph is checked *statically*, on its
``GraphDef`` and function library, before anything of it runs (:func:`check_meta_graph`, called
by the SavedModel and checkpoint sources before TensorFlow loads them) and again on the serving
graph that goes into the artifact (:func:`check_graph_def`, called by ``save_model`` for every
source, including a live session).

How :data:`FILE_OPS` was chosen (:func:`derive_file_ops`, re-run by ``tests/test_ops_policy.py``
on the registries this package carries and on the installed TensorFlow, so the list cannot
drift): an op touches files or the network when its ``OpDef`` has an input or attr named in
:data:`FILE_ARG_NAMES` (a path, file pattern, checkpoint prefix, log dir, URL or server address)
or its name contains ``File``, ``Reader``, ``Writer`` or ``Rpc`` or starts with ``Write``.
``PrintV2`` is refused only when its ``output_stream`` is a ``file://`` URL. :data:`PYTHON_OPS`
are the ops whose name contains ``PyFunc``.

Two uses of file ops are part of every legitimate SavedModel and pass:

* the Saver's own ``SaveV2``/``RestoreV2``/``MergeV2Checkpoints`` (and their V1 forms), only
  inside the Saver's subgraph (what ``saver_def`` names, and the functions it calls), and a
  restore op only reading the checkpoint prefix the loader feeds;
* a vocabulary table's ``InitializeTableFromTextFile(V2)`` whose file name is one of the
  SavedModel's assets (which :mod:`..sources.assets` confines to the folder), a function
  argument the TF2 loader binds to such an asset, or (checkpoint graphs) a constant naming a file
  inside the checkpoint's folder.

An owner who needs other file ops can pass ``save_model(..., allow_file_ops=True)``; Python ops
are never allowed (no EAS processor can run them).
"""

import os
import re

from mlflow_eas_savedmodel.errors import invalid_parameter_value

FILE_ARG_NAMES = frozenset({
    "address", "checkpoint_prefixes", "ckpt_path", "db_uri", "debug_urls", "descriptor_source",
    "destination_prefix", "file_pattern", "filename", "filenames", "logdir", "memory_region_name",
    "new_vocab_file", "old_vocab_file", "path", "patterns", "prefix", "reader_path_prefix",
    "reader_prefix", "server", "server_address", "shard_dir", "target_workers", "vocab_file",
    "writer_path_prefix", "writer_prefix",
})
_FILE_NAME_RE = re.compile(r"File|Reader|Writer|Rpc|^Write")
_PYTHON_NAME_RE = re.compile(r"PyFunc")

# Derived by derive_file_ops() from tf-1.12 ... tf-2.7 (runtimes/registries) and TF 2.21.
FILE_OPS = frozenset({
    "BigQueryReader", "CSVDataset", "CSVDatasetV2", "CacheDataset", "CacheDatasetV2",
    "CloseSummaryWriter", "CreateSummaryDbWriter", "CreateSummaryFileWriter", "DTensorRestoreV2",
    "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
    "DatasetToTFRecord", "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount",
    "DebugNumericSummary", "DecodeProtoV2", "DeleteRpcFutureResource", "DistributedSave",
    "EncodeProto", "ExperimentalCSVDataset", "ExperimentalDatasetToTFRecord",
    "ExperimentalLMDBDataset", "ExperimentalMatchingFilesDataset", "FileSystemSetConfiguration",
    "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2", "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2", "FixedUnigramCandidateSampler", "FlushSummaryWriter",
    "GenerateBigQueryReaderPartitions", "GenerateVocabRemapping", "IdentityReader",
    "IdentityReaderV2", "ImmutableConst", "InitializeTableFromTextFile",
    "InitializeTableFromTextFileV2", "LMDBDataset", "LMDBReader", "LoadAndRemapMatrix",
    "LoadDataset", "MatchingFiles", "MatchingFilesDataset", "MergeV2Checkpoints", "ReadFile",
    "ReaderNumRecordsProduced", "ReaderNumRecordsProducedV2", "ReaderNumWorkUnitsCompleted",
    "ReaderNumWorkUnitsCompletedV2", "ReaderRead", "ReaderReadUpTo", "ReaderReadUpToV2",
    "ReaderReadV2", "ReaderReset", "ReaderResetV2", "ReaderRestoreState", "ReaderRestoreStateV2",
    "ReaderSerializeState", "ReaderSerializeStateV2", "RecordInput", "RegisterDataset",
    "RegisterDatasetV2", "Restore", "RestoreSlice", "RestoreV2", "Rpc", "RpcCall",
    "RpcCheckStatus", "RpcClient", "RpcGetValue", "RpcServer", "RpcServerRegister",
    "RpcServerStart", "Save", "SaveDataset", "SaveDatasetV2", "SaveSlices", "SaveV2",
    "ShardedFilename", "ShardedFilespec", "Skipgram", "SnapshotDataset", "SnapshotDatasetReader",
    "SnapshotDatasetV2", "SnapshotNestedDatasetReader", "StatsAggregatorSetSummaryWriter",
    "SummaryWriter", "TFRecordDataset", "TFRecordDatasetV2", "TFRecordReader", "TFRecordReaderV2",
    "TextLineDataset", "TextLineReader", "TextLineReaderV2", "TryRpc", "WholeFileReader",
    "WholeFileReaderV2", "WriteAudioSummary", "WriteFile", "WriteGraphSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteRawProtoSummary", "WriteScalarSummary",
    "WriteSummary",
})
PYTHON_OPS = frozenset({"EagerPyFunc", "PyFunc", "PyFuncStateless"})

_SAVER_OPS = frozenset({
    "MergeV2Checkpoints", "Restore", "RestoreSlice", "RestoreV2", "Save", "SaveSlices", "SaveV2",
    "ShardedFilename", "ShardedFilespec",
})
_RESTORE_OPS = frozenset({"Restore", "RestoreSlice", "RestoreV2"})
_TEXT_FILE_TABLE_OPS = frozenset({"InitializeTableFromTextFile", "InitializeTableFromTextFileV2"})
_PASS_THROUGH_OPS = frozenset({"Identity", "ReadVariableOp"})
_MAX_LISTED = 20


def derive_file_ops(ops):
    """``(file/network ops, Python ops)`` of an op registry, by the rule in the module docstring.

    Args:
        ops: ``{op name: {"inputs": [names], "attrs": {name: default}}}``, the ``ops`` of a
            ``runtimes/registries/tf-X.json.gz`` file (``scripts/dump_op_registry.py``).
    """
    file_ops, python_ops = set(), set()
    for name, spec in ops.items():
        if _PYTHON_NAME_RE.search(name):
            python_ops.add(name)
        elif _FILE_NAME_RE.search(name) or FILE_ARG_NAMES & {*spec["inputs"], *spec["attrs"]}:
            file_ops.add(name)
    return file_ops, python_ops


class _Finding:
    def __init__(self, node, op, function=None, why=""):
        self.node, self.op, self.function, self.why = node, op, function, why

    @property
    def python(self):
        return self.op in PYTHON_OPS

    def __str__(self):
        where = f"node {self.node!r}" + (f" in function {self.function!r}" if self.function else "")
        return f"{where} ({self.op}{': ' + self.why if self.why else ''})"


def _forbidden(node):
    """Why ``node`` reads or writes files, the network or runs Python, or ``None``."""
    if node.op in PYTHON_OPS:
        return "runs Python"
    if node.op in FILE_OPS:
        return "file system or network"
    if node.op == "PrintV2" and node.attr["output_stream"].s.startswith(b"file://"):
        return f"prints to {node.attr['output_stream'].s.decode(errors='replace')}"
    return None


def _input_node(ref):
    """'name:0' / '^name' / 'name:out:0' (function) -> the producing node's name."""
    return ref.lstrip("^").split(":")[0]


def _called_functions(node, library):
    names = set()
    if node.op in library:
        names.add(node.op)
    for value in node.attr.values():
        if value.HasField("func"):
            names.add(value.func.name)
        for f in value.list.func:
            names.add(f.name)
    return names & set(library)


def _closure(starts, by_name):
    seen, pending = set(), list(starts)
    while pending:
        name = pending.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        pending.extend(_input_node(i) for i in by_name[name].input)
    return seen


def _live_nodes(meta_graph, by_name):
    """Every node a TF1 loader or a request can run: what the SignatureDefs, the node lists of
    the collections (main op, legacy init op, table initializers, ...) and the Saver need."""
    starts = [
        _input_node(t.name)
        for signature in meta_graph.signature_def.values()
        for t in list(signature.inputs.values()) + list(signature.outputs.values())
        if t.name
    ]
    for collection in meta_graph.collection_def.values():
        starts.extend(_input_node(n) for n in collection.node_list.value)
    saver = meta_graph.saver_def
    starts.extend(_input_node(n) for n in (saver.restore_op_name, saver.save_tensor_name) if n)
    return _closure(starts, by_name)


def _through(name, by_name):
    """Follows Identity-like nodes back from ``name`` to the node that makes the value."""
    seen = set()
    while name in by_name and by_name[name].op in _PASS_THROUGH_OPS and name not in seen:
        seen.add(name)
        name = _input_node(by_name[name].input[0])
    return name


def _saver_scope(meta_graph, by_name, library):
    """``(saver's node names, saver's function names, filename node)`` of ``saver_def``."""
    saver = meta_graph.saver_def if meta_graph is not None else None
    if saver is None or not saver.restore_op_name:
        return set(), set(), None
    starts = [_input_node(saver.restore_op_name), _input_node(saver.save_tensor_name)]
    nodes = _closure(starts, by_name)
    functions, pending = set(), [f for n in nodes for f in _called_functions(by_name[n], library)]
    while pending:
        name = pending.pop()
        if name in functions:
            continue
        functions.add(name)
        for node in library[name].node_def:
            pending.extend(_called_functions(node, library))
    return nodes, functions, _input_node(saver.filename_tensor_name)


def _const_path_inside(node, root):
    """Whether ``node`` is a string ``Const`` naming a file inside the folder ``root``."""
    if root is None or node is None or node.op != "Const":
        return False
    values = node.attr["value"].tensor.string_val
    if len(values) != 1:
        return False
    path = os.path.realpath(os.fsdecode(values[0]))
    return os.path.commonpath([path, os.path.realpath(root)]) == os.path.realpath(root)


def _findings(graph_def, meta_graph=None, asset_tensors=(), files_root=None, tf2_loader=False):
    library = {f.signature.name: f for f in graph_def.library.function}
    by_name = {n.name: n for n in graph_def.node}
    saver_nodes, saver_functions, filename_node = _saver_scope(meta_graph, by_name, library)
    live = _live_nodes(meta_graph, by_name) if meta_graph is not None and not tf2_loader else None
    assets = {_input_node(t) for t in asset_tensors}
    findings = []
    for node in graph_def.node:
        why = _forbidden(node)
        if why is None:
            continue
        if node.op in _SAVER_OPS and node.name in saver_nodes:
            if node.op not in _RESTORE_OPS or _through(_input_node(node.input[0]), by_name) == filename_node:
                continue
            why = "restores from a path other than the checkpoint the loader names"
        elif node.op in _SAVER_OPS and live is not None and node.name not in live:
            # A second Saver (the training one, next to the one simple_save or the Builder
            # adds) is common in TF1 exports: nothing a loader or a request runs reaches it,
            # and the export keeps only what the SignatureDefs and init ops need.
            continue
        if node.op in _TEXT_FILE_TABLE_OPS:
            source = _through(_input_node(node.input[1]), by_name)
            if source in assets or _const_path_inside(by_name.get(source), files_root):
                continue
        findings.append(_Finding(node.name, node.op, why=why))
    for name, function in library.items():
        args = {a.name for a in function.signature.input_arg}
        for node in function.node_def:
            why = _forbidden(node)
            if why is None:
                continue
            if node.op in _SAVER_OPS and name in saver_functions:
                if node.op not in _RESTORE_OPS or node.input[0] in args:
                    continue
                why = "restores from a path other than the checkpoint the loader names"
            if tf2_loader and node.op in _TEXT_FILE_TABLE_OPS and node.input[1] in args:
                continue  # the TF2 loader binds the argument to an asset of the folder
            findings.append(_Finding(node.name, node.op, name, why))
    return findings


def _raise(findings, what, allow_file_ops, outcome="nothing of it was run"):
    if allow_file_ops:
        findings = [f for f in findings if f.python]
    if not findings:
        return
    listed = "\n  ".join(str(f) for f in findings[:_MAX_LISTED])
    more = f"\n  ... and {len(findings) - _MAX_LISTED} more" if len(findings) > _MAX_LISTED else ""
    fixes = []
    if any(f.python for f in findings):
        fixes.append(
            "Python ops (PyFunc, EagerPyFunc, tf.py_function, tf.numpy_function) cannot run on "
            "EAS and are never accepted: replace them with TensorFlow ops."
        )
    if any(not f.python for f in findings):
        fixes.append(
            "File and network ops would read or write the serving machine's files at load or "
            "at every request. Remove them; if the model really needs them and you trust it, "
            "pass save_model(..., allow_file_ops=True)."
        )
    raise invalid_parameter_value(
        f"{what} contains ops that touch the file system or the network or run Python; "
        f"{outcome}:\n  {listed}{more}\n" + "\n".join(fixes)
    )


def check_meta_graph(
    meta_graph, what, asset_tensors=(), files_root=None, allow_file_ops=False,
    outcome="nothing of it was run",
):
    """Refuses a source's MetaGraphDef with file, network or Python ops, before it runs.

    Args:
        meta_graph: the ``MetaGraphDef`` (its ``graph_def``, function library and
            ``saver_def`` are read; nothing is imported or run).
        what: the source as the message names it, e.g. ``"The SavedModel in '/m'"``.
        asset_tensors: names of the tensors the loader feeds with asset paths (confined to
            the folder by :mod:`..sources.assets`).
        files_root: the source's folder: a vocabulary table may read a file named by a
            constant only when the file (after symlinks) is inside it (checkpoint graphs).
        allow_file_ops: keep file and network ops (never Python ops).
        outcome: what the message says happened instead (e.g. "it was not loaded").

    Raises:
        MlflowException: naming each op and node (and function).
    """
    findings = _findings(
        meta_graph.graph_def, meta_graph, asset_tensors, files_root,
        tf2_loader=len(meta_graph.object_graph_def.nodes) > 0,
    )
    _raise(findings, what, allow_file_ops, outcome)


def check_graph_def(graph_def, what, allow_file_ops=False):
    """Refuses a serving graph (what goes into the artifact) with file, network or Python ops.

    Example:
        >>> import tensorflow as tf
        >>> from mlflow_eas_savedmodel.graph.ops_policy import check_graph_def
        >>> graph = tf.Graph()
        >>> with graph.as_default():
        ...     _ = tf.io.read_file(tf.compat.v1.placeholder(tf.string), name="read")
        >>> check_graph_def(graph.as_graph_def(), "The model")
        Traceback (most recent call last):
        mlflow.exceptions.MlflowException: The model contains ops that touch the file system or
        the network or run Python; the model was not saved:
          node 'read' (ReadFile: file system or network)
        ...
    """
    _raise(_findings(graph_def), what, allow_file_ops, outcome="the model was not saved")
