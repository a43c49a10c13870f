"""Which ops a model may contain: only ops known to compute without side effects.

A model source is untrusted, and TensorFlow runs parts of a SavedModel while it loads it (the
TF1 ``main_op``/``legacy_init_op``, the Saver's restore op, TF2 initializer functions) and the
rest at every request. An op such as ``ReadFile("/etc/passwd")`` in a signature's outputs hands
the serving machine's files to any client; ``WriteFile`` in a ``main_op`` writes at every load;
``PyFunc`` runs Python that EAS does not have; ``DatasetFromGraph`` runs a serialized graph that
no static check sees. So every graph is checked *statically*, on its ``GraphDef`` and function
library, before anything of it runs (:func:`check_meta_graph`, called by the SavedModel and
checkpoint sources before TensorFlow loads them and by every load of an artifact) and again on
the serving graph that goes into the artifact (:func:`check_graph_def`, called by ``save_model``
for every source, including a live session).

**An allowlist, not a denylist.** A node (of the main graph or of any function of the library),
and every op a function-valued attr names, must be an op of :data:`ALLOWED_OPS`, the list
committed in ``ops_allowlist.txt`` beside this module. How that list is made
(:func:`derive_allowlist`, re-run by ``tests/security/test_ops_allowlist.py`` on the registries this
package carries and TF 2.21's, so it cannot drift):

1. An op's *family* is the generated Python wrapper module that wraps it in TF 2.21
   (``tensorflow/python/ops/gen_math_ops.py`` -> ``math``), read from the modules' source by
   :func:`read_op_families` (nothing is imported).
2. The ops of the families in :data:`ALLOWED_FAMILIES` are allowed; every other family is
   named in :data:`REFUSED_FAMILIES` with the reason (datasets, file I/O, summaries, debugger,
   Python, RPC, collectives, TPU/XLA, checkpoint tools, cross-request batching, protobuf
   descriptors, ...). An op no wrapper module holds (test ops, TPU and MKL internals) and an
   op only the old registries (TF 1.12-2.7) have is refused.
3. Refused even inside an allowed family: the file and network ops (:data:`FILE_OPS`: an input
   or attr named in :data:`FILE_ARG_NAMES`, or a name with ``File``/``Reader``/``Writer``/
   ``Rpc`` or starting with ``Write``), every ``*Dataset*``/``*Iterator*`` op, the data-flow
   ops that block a request or keep values between sessions (queues, barriers, accumulators,
   staging areas, session handles), and :data:`HAND_REFUSED` (``Abort``, ``RemoteCall``).
4. Allowed outside the allowed families, reviewed by hand: :data:`HAND_ALLOWED` (``Assert``,
   ``Print``, ``PrintV2`` to stderr, ``Timestamp``, the V1 summary ops that only build a
   ``Summary`` string in memory (``ScalarSummary``, ``HistogramSummary``, ``MergeSummary``, ...:
   every TF 1.x Estimator export holds them), and ``CompareAndBitpack`` of the old registries).

**Exemptions are exact structures.** Two uses of file ops are part of every legitimate
SavedModel:

* the Saver (``saver_def``): its restore op's subgraph may hold ``Restore``/``RestoreV2``
  nodes only when each reads exactly the filename tensor the loader feeds and has no control
  inputs, and no save op at all (a ``Save`` hung on ``restore_op_name`` would write at every
  load); its save subgraph's ops pass while nothing else (a SignatureDef, an init op, the
  restore) reaches them. A second Saver that nothing reaches (a training Saver beside the one
  ``simple_save`` adds) is tolerated in a *source*, whose SignatureDefs are those of its own
  ``saved_model.pb``; never in an artifact (``artifact=True``), which this package wrote with
  one Saver;
* a vocabulary table's ``InitializeTableFromTextFile(V2)`` whose file name is one of the
  SavedModel's asset tensors (confined to the folder by :mod:`..sources.assets`), whose value
  names that asset (the TF1 Builder keeps the asset's original path, the loader feeds
  ``assets/<AssetFileDef.filename>``), and which no SignatureDef reaches (it runs only in the
  loader's init path, where the asset path is fed); in a TF2 source, a function argument the
  TF2 loader binds to such an asset; in a checkpoint graph, a constant naming a file inside
  the checkpoint's folder.

The rules are those of the loader that really loads the graph: an artifact is always loaded by
the TF1 loader (``artifact=True``), whatever its ``object_graph_def`` says.

**Opting in.** ``save_model(..., allow_ops=["OpName", ...])`` keeps the named ops (recorded in
MLmodel and honoured at load); ``allow_file_ops=True`` keeps every op of :data:`FILE_OPS` (and
``PrintV2`` to a file) as before. Python ops (:data:`PYTHON_OPS`) are never allowed: no EAS
processor can run them.
"""

import functools
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
_DATASET_NAME_RE = re.compile(r"Dataset|Iterator")
# data_flow ops that block a request (a dequeue on an empty queue waits forever) or keep values
# between sessions and requests; TensorArray, Stack and DynamicPartition/Stitch stay allowed.
_SHARED_STATE_RE = re.compile(
    r"Queue|Barrier|Accumulator|Stage|^(Ordered)?Map(Clear|IncompleteSize|Peek|Size|Unstage)"
    r"|Session(Handle|Tensor)"
)

ALLOWED_FAMILIES = frozenset({
    "array", "audio", "bitwise", "boosted_trees", "candidate_sampling", "clustering",
    "composite_tensor", "control_flow", "count", "ctc", "cudnn_rnn", "data_flow", "functional",
    "image", "linalg", "list", "lookup", "manip", "map", "math", "nn", "optional", "parsing",
    "ragged_array", "ragged_conversion", "ragged_math", "random", "random_index_shuffle",
    "resource_variable", "rnn", "sdca", "set", "sparse", "sparse_csr_matrix", "special_math",
    "spectral", "state", "stateful_random", "stateless_random", "stateless_random_v2", "string",
    "training", "uniform_quant",
})
REFUSED_FAMILIES = {
    "audio_microfrontend": "a TF Lite experimental op",
    "batch": "batches across requests and runs functions outside the graph",
    "check_preemption": "talks to the cluster coordination service",
    "checkpoint": "reads checkpoints and vocabulary files",
    "collective": "communicates with other processes",
    "dataset": "a dataset op (datasets read files and run embedded graphs and functions)",
    "debug": "a debugger op (writes files, sends to URLs)",
    "decode_proto": "reads protobuf descriptors, possibly from files",
    "dtensor": "DTensor mesh, TPU and checkpoint ops",
    "encode_proto": "reads protobuf descriptors, possibly from files",
    "experimental_dataset": "a dataset op (datasets read files and run embedded graphs and functions)",
    "filesystem": "configures file systems",
    "io": "reads or writes files",
    "logging": "a logging op not reviewed as pure (Assert, Print, PrintV2, Timestamp and the "
               "in-memory V1 summary ops are allowed)",
    "mlir_passthrough": "runs an embedded MLIR program",
    "nccl": "communicates with other devices",
    "rpc": "a network op",
    "script": "runs Python",
    "sendrecv": "exchanges tensors with other processes",
    "summary": "writes summaries to files or databases",
    "sync": "synchronises devices",
    "tpu": "a TPU op",
    "tpu_partition": "a TPU op",
    "trt": "runs a serialized TensorRT engine",
    "user": "an example user op",
    "xla": "runs XLA programs",
}
HAND_ALLOWED = {
    "Assert": "logging family: fails the run, no side effect",
    "Print": "logging family: prints to stderr",
    "PrintV2": "logging family: prints to stderr/stdout; output_stream file:// is refused",
    "Timestamp": "logging family: reads the clock",
    # TF1 training summaries: each serializes a Summary protobuf into a string tensor and writes
    # nothing (writing is a FileWriter's, in Python, or a summary-family op, refused). Every
    # Estimator exported by TF 1.x keeps them in its graph, unreached by the SignatureDefs.
    **{op: "logging family: builds a Summary protobuf string in memory, writes nothing" for op in (
        "AudioSummary", "AudioSummaryV2", "HistogramSummary", "ImageSummary", "MergeSummary",
        "ScalarSummary", "TensorSummary", "TensorSummaryV2",
    )},
    "CompareAndBitpack": "math family of TF 1.12-2.7, removed since",
}
HAND_REFUSED = {
    "Abort": "kills the serving process",
    "RemoteCall": "runs a function on another task (network)",
}
_UNKNOWN = "an op no TensorFlow wrapper module holds (test, TPU or MKL internals) or an unknown op"
_OLD_ONLY = "an op of the old registries only, not reviewed"

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
ALLOWLIST_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops_allowlist.txt")

_SAVE_OPS = frozenset({"MergeV2Checkpoints", "Save", "SaveSlices", "SaveV2", "ShardedFilename", "ShardedFilespec"})
_RESTORE_OPS = frozenset({"Restore", "RestoreSlice", "RestoreV2"})
_SAVER_OPS = _SAVE_OPS | _RESTORE_OPS
_TEXT_FILE_TABLE_OPS = frozenset({"InitializeTableFromTextFile", "InitializeTableFromTextFileV2"})
_PASS_THROUGH_OPS = frozenset({"Identity", "ReadVariableOp"})
_INIT_SIGNATURE = "__saved_model_init_op"  # TF2 saves its init op as this SignatureDef
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


def family_of_module(path):
    """``.../gen_stateless_random_ops_v2.py`` -> ``stateless_random_v2``; ``gen_trt_ops`` -> ``trt``."""
    name = os.path.basename(path)[len("gen_"):-len(".py")]
    return re.sub(r"_ops?(?=$|_v\d+$)", "", name)


def read_op_families(tensorflow_dir=None):
    """``{op name: family}`` of the installed TensorFlow, read from its ``gen_*.py`` sources.

    Each generated wrapper calls ``_op_def_library._apply_op_helper("OpName", ...)``; the
    files are read as text (TensorFlow is not imported).
    """
    if tensorflow_dir is None:
        import importlib.util

        tensorflow_dir = os.path.dirname(importlib.util.find_spec("tensorflow").origin)
    helper = re.compile(r'_apply_op_helper\(\s*"([A-Za-z0-9_>]+)"')
    families = {}
    for folder, _, files in sorted(os.walk(tensorflow_dir)):
        for name in sorted(files):
            if name.startswith("gen_") and name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    for op in helper.findall(f.read()):
                        families.setdefault(op, family_of_module(name))
    return families


def derive_allowlist(registries, current, families):
    """``{op: (verdict, family or reason)}`` for every op of ``registries``, by the module's rule.

    Args:
        registries: the ``ops`` of every registry (old runtimes and TF 2.21) to cover.
        current: TF 2.21's ``ops`` (an op absent there is one of the old registries only).
        families: :func:`read_op_families` of TF 2.21.

    Returns:
        ``{op name: ("allow" | "refuse", family)}``; ``family`` is ``"-"`` for ops without one.
    """
    ops = {}
    for registry in registries:
        ops.update(registry)
    ops.update(current)
    file_ops, python_ops = derive_file_ops(ops)
    verdicts = {}
    for name in sorted(ops):
        family = families.get(name, "-")
        allowed = name in HAND_ALLOWED or (
            family in ALLOWED_FAMILIES
            and name not in HAND_REFUSED
            and name not in file_ops
            and name not in python_ops
            and not _DATASET_NAME_RE.search(name)
            and not (family == "data_flow" and _SHARED_STATE_RE.search(name))
        )
        verdicts[name] = ("allow" if allowed else "refuse", family)
    return verdicts


@functools.lru_cache(maxsize=1)
def _allowlist():
    """``(allowed op names, {op: family})`` of the committed :data:`ALLOWLIST_FILE`."""
    allowed, families = set(), {}
    with open(ALLOWLIST_FILE, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                verdict, name, family = line.split()
                families[name] = family
                if verdict == "allow":
                    allowed.add(name)
    return frozenset(allowed), families


def allowed_ops():
    """The committed allowlist (:data:`ALLOWLIST_FILE`) as a frozenset of op names."""
    return _allowlist()[0]


def check_allow_ops(allow_ops):
    """``allow_ops`` as a sorted list of op names; refuses Python ops and non-strings.

    Raises:
        MlflowException: ``allow_ops`` is not a list of op names, or names a Python op.
    """
    if allow_ops is None:
        return []
    if isinstance(allow_ops, str) or not all(isinstance(o, str) and o for o in allow_ops):
        raise invalid_parameter_value(
            f"allow_ops must be a list of op names such as ['SqlDataset'], not {allow_ops!r}."
        )
    python = sorted(set(allow_ops) & PYTHON_OPS)
    if python:
        raise invalid_parameter_value(
            f"allow_ops names Python ops {python}: they cannot run on EAS and are never "
            "accepted. Replace them with TensorFlow ops and drop them from allow_ops."
        )
    return sorted(set(allow_ops))


class _Finding:
    def __init__(self, node, op, function=None, why=""):
        self.node, self.op, self.function, self.why = node, op, function, why

    @property
    def python(self):
        return self.op in PYTHON_OPS

    @property
    def file_op(self):
        return self.op in FILE_OPS or self.op == "PrintV2"

    def __str__(self):
        where = f"node {self.node!r}" + (f" in function {self.function!r}" if self.function else "")
        return f"{where} ({self.op}{': ' + self.why if self.why else ''})"


def _forbidden(op, node=None):
    """Why the op ``op`` (of ``node``, when it is a node) may not run, or ``None``."""
    if op in PYTHON_OPS:
        return "runs Python"
    if op in FILE_OPS:
        return "file system or network"
    if op == "PrintV2" and node is not None:
        stream = node.attr["output_stream"].s
        if stream.startswith(b"file://"):
            return f"prints to {stream.decode(errors='replace')}"
    allowed, families = _allowlist()
    if op in allowed:
        return None
    if op in HAND_REFUSED:
        return HAND_REFUSED[op]
    family = families.get(op)
    if family is None:
        return f"not on the allowlist: {_UNKNOWN}"
    if family in REFUSED_FAMILIES:
        return f"not on the allowlist: {REFUSED_FAMILIES[family]}"
    if _DATASET_NAME_RE.search(op):
        return "not on the allowlist: a dataset op"
    if family == "-":
        return f"not on the allowlist: {_UNKNOWN}"
    return f"not on the allowlist: a {family} op that blocks a request or keeps state between requests"


def _input_node(ref):
    """'name:0' / '^name' / 'name:out:0' (function) -> the producing node's name."""
    return ref.lstrip("^").split(":")[0]


def _attr_funcs(attr_values):
    """Every ``NameAttrList`` of the attr values (function attrs and their own attrs, nested)."""
    pending, found = list(attr_values), []
    while pending:
        value = pending.pop()
        funcs = ([value.func] if value.HasField("func") else []) + list(value.list.func)
        for func in funcs:
            found.append(func)
            pending.extend(func.attr.values())
    return found


def _called_functions(node, library):
    names = {node.op} if node.op in library else set()
    names.update(f.name for f in _attr_funcs(node.attr.values()))
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


def _functions_of(nodes, library):
    """Every function the nodes call, directly or through the functions they call."""
    functions, pending = set(), [f for n in nodes for f in _called_functions(n, library)]
    while pending:
        name = pending.pop()
        if name in functions:
            continue
        functions.add(name)
        for node in library[name].node_def:
            pending.extend(_called_functions(node, library))
    return functions


def _through(name, by_name):
    """Follows Identity-like nodes back from ``name`` to the node that makes the value."""
    seen = set()
    while name in by_name and by_name[name].op in _PASS_THROUGH_OPS and name not in seen:
        seen.add(name)
        if not by_name[name].input:
            break
        name = _input_node(by_name[name].input[0])
    return name


class _Reach:
    """What a TF1 loader or a request runs, by where it starts: ``request`` (the SignatureDefs),
    ``init`` (the collections' node lists: main op, legacy init op, table initializers, ...,
    and TF2's init SignatureDef), ``restore`` and ``save`` (the Saver)."""

    def __init__(self, meta_graph, by_name, library):
        starts = {"request": [], "init": [], "restore": [], "save": []}
        saver = meta_graph.saver_def if meta_graph is not None else None
        if meta_graph is not None:
            for key, signature in meta_graph.signature_def.items():
                kind = "init" if key == _INIT_SIGNATURE else "request"
                starts[kind].extend(
                    _input_node(t.name)
                    for t in list(signature.inputs.values()) + list(signature.outputs.values())
                    if t.name
                )
            for collection in meta_graph.collection_def.values():
                starts["init"].extend(_input_node(n) for n in collection.node_list.value)
            if saver.restore_op_name:
                starts["restore"].append(_input_node(saver.restore_op_name))
            if saver.save_tensor_name:
                starts["save"].append(_input_node(saver.save_tensor_name))
        self.nodes = {kind: _closure(s, by_name) for kind, s in starts.items()}
        self.functions = {
            kind: _functions_of([by_name[n] for n in nodes], library) for kind, nodes in self.nodes.items()
        }
        self.filename = _input_node(saver.filename_tensor_name) if saver and saver.filename_tensor_name else None
        self.known = meta_graph is not None

    def kinds(self, name, functions=False):
        table = self.functions if functions else self.nodes
        return {kind for kind, names in table.items() if name in names}


def _saver_verdict(node, kinds, reach, by_name, artifact):
    """``None`` when ``node`` (a Save/Restore op of the main graph) is the Saver's own, else why."""
    if not kinds:
        if artifact or not reach.known:
            return "not part of the Saver the loader uses"
        # A second Saver (the training one, next to the one simple_save or the Builder adds) is
        # common in TF1 sources: nothing a loader or the source's own SignatureDefs run reaches
        # it, and the export keeps only what the SignatureDefs and init ops need.
        return None
    if kinds == {"restore"} and node.op in _RESTORE_OPS:
        if any(i.startswith("^") for i in node.input):
            return "the Saver's restore op has control inputs: they would run at every load"
        if not node.input or _through(_input_node(node.input[0]), by_name) != reach.filename:
            return "restores from a path other than the checkpoint the loader names"
        return None
    if kinds == {"save"} and node.op in _SAVE_OPS:
        return None
    if "restore" in kinds and node.op in _SAVE_OPS:
        return "a save op the Saver's restore runs: it would write at every load"
    return "file system or network"


def _asset_file_defs(meta_graph):
    """``{asset tensor node: AssetFileDef.filename}`` (the field and the TF1 collection)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    defs = list(meta_graph.asset_file_def)
    collection = meta_graph.collection_def.get("saved_model_assets")
    if collection is not None:
        for value in collection.any_list.value:
            asset = meta_graph_pb2.AssetFileDef()
            value.Unpack(asset)
            defs.append(asset)
    return {_input_node(a.tensor_info.name): a.filename for a in defs}


def _asset_value_matches(node, filename):
    """A fed asset tensor (a placeholder) or a string constant naming the asset ``filename``."""
    if node is None:
        return False
    if node.op in ("Placeholder", "PlaceholderWithDefault") and not node.input:
        return True
    if node.op != "Const":
        return False
    values = node.attr["value"].tensor.string_val
    return len(values) == 1 and os.path.basename(os.fsdecode(values[0])) == filename


def _const_path_inside(node, root):
    """Whether ``node`` is a string ``Const`` naming a file inside the folder ``root``."""
    if root is None or node is None or node.op != "Const":
        return False
    values = node.attr["value"].tensor.string_val
    if len(values) != 1:
        return False
    path = os.path.realpath(os.fsdecode(values[0]))
    return os.path.commonpath([path, os.path.realpath(root)]) == os.path.realpath(root)


def _table_verdict(node, kinds, by_name, assets, asset_files, files_root):
    """``None`` when the text-file table initializer ``node`` reads an asset in the init path."""
    if len(node.input) < 2:
        return "has no file name input"
    source = _through(_input_node(node.input[1]), by_name)
    if source in assets and source in asset_files:
        if "request" in kinds:
            return "reads its file at requests, where the loader feeds no asset path"
        if not _asset_value_matches(by_name.get(source), asset_files[source]):
            return f"its asset tensor does not name the asset {asset_files[source]!r}"
        return None
    if _const_path_inside(by_name.get(source), files_root) and "request" not in kinds:
        return None
    return "file system or network"


def _filename_args(function, library, graph_def, by_name, reach):
    """The arguments of ``function`` every call in the main graph binds to the filename tensor
    the loader feeds (what the Saver's restore function may read a checkpoint from)."""
    positions = None
    for node in graph_def.node:
        if function not in _called_functions(node, library):
            continue
        inputs = [i for i in node.input if not i.startswith("^")]
        bound = {k for k, i in enumerate(inputs) if _through(_input_node(i), by_name) == reach.filename}
        positions = bound if positions is None else positions & bound
    args = library[function].signature.input_arg
    return {args[k].name for k in positions or () if k < len(args)}


def _check_attr_ops(node, library, function, findings):
    """Ops a function-valued attr names that are no library function: TensorFlow runs such an
    op as a one-node function, so it must be allowed like any node."""
    for func in _attr_funcs(node.attr.values()):
        if func.name not in library:
            why = _forbidden(func.name)
            if why is not None:
                findings.append(_Finding(node.name, func.name, function, f"called through an attr: {why}"))


def _findings(graph_def, meta_graph=None, asset_tensors=(), files_root=None, tf2_loader=False, artifact=False):
    library = {f.signature.name: f for f in graph_def.library.function}
    by_name = {n.name: n for n in graph_def.node}
    reach = _Reach(meta_graph, by_name, library)
    assets = {_input_node(t) for t in asset_tensors}
    asset_files = _asset_file_defs(meta_graph) if meta_graph is not None and assets else {}
    findings = []
    for node in graph_def.node:
        _check_attr_ops(node, library, None, findings)
        if node.op in library:
            continue  # a call: the function's own nodes are checked below
        why = _forbidden(node.op, node)
        if why is None:
            continue
        kinds = reach.kinds(node.name)
        if node.op in _SAVER_OPS:
            why = _saver_verdict(node, kinds, reach, by_name, artifact)
        elif node.op in _TEXT_FILE_TABLE_OPS:
            why = _table_verdict(node, kinds, by_name, assets, asset_files, files_root)
        if why is not None:
            findings.append(_Finding(node.name, node.op, why=why))
    for name, function in library.items():
        args = {a.name for a in function.signature.input_arg}
        kinds = reach.kinds(name, functions=True)
        saver_only = bool(kinds) and kinds <= {"restore", "save"}
        filename_args = _filename_args(name, library, graph_def, by_name, reach) if saver_only else set()
        for node in function.node_def:
            _check_attr_ops(node, library, name, findings)
            if node.op in library:
                continue
            why = _forbidden(node.op, node)
            if why is None:
                continue
            if node.op in _SAVER_OPS and saver_only and not artifact:
                if node.op in _SAVE_OPS and kinds == {"save"}:
                    continue
                if (node.op in _RESTORE_OPS and kinds == {"restore"} and node.input
                        and _input_node(node.input[0]) in filename_args
                        and not any(i.startswith("^") for i in node.input)):
                    continue
                if node.op in _RESTORE_OPS:
                    why = "restores from a path other than the checkpoint the loader names"
            if (tf2_loader and not artifact and node.op in _TEXT_FILE_TABLE_OPS
                    and len(node.input) > 1 and node.input[1] in args):
                continue  # the TF2 loader binds the argument to an asset of the folder
            findings.append(_Finding(node.name, node.op, name, why))
    return findings


def _raise(findings, what, allow_file_ops, allow_ops, outcome="nothing of it was run"):
    allow_ops = set(check_allow_ops(allow_ops))
    findings = [
        f for f in findings
        if f.python or not (f.op in allow_ops or (allow_file_ops and f.file_op))
    ]
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
    others = sorted({f.op for f in findings if not f.python})
    if others:
        fixes.append(
            "Only ops known to compute without side effects are accepted (docs/security.md): "
            "the others could read or write the serving machine's files or reach the network at "
            "load or at every request. Remove them; if the model really needs them and you "
            f"trust it, pass save_model(..., allow_ops={others!r})"
            + (" (or allow_file_ops=True for every file op)" if any(f.file_op for f in findings) else "")
            + "."
        )
    raise invalid_parameter_value(
        f"{what} contains ops off the allowlist of ops known to compute without side effects, "
        f"ops that may touch the file system or the network or run Python; {outcome}:\n  "
        f"{listed}{more}\n"
        + "\n".join(fixes)
    )


def check_meta_graph(
    meta_graph, what, asset_tensors=(), files_root=None, allow_file_ops=False,
    outcome="nothing of it was run", *, allow_ops=None, artifact=False,
):
    """Refuses a MetaGraphDef with an op off the allowlist, before any of it runs.

    Args:
        meta_graph: the ``MetaGraphDef`` (its ``graph_def``, function library, SignatureDefs,
            collections and ``saver_def`` are read; nothing is imported or run).
        what: the source as the message names it, e.g. ``"The SavedModel in '/m'"``.
        asset_tensors: names of the tensors the loader feeds with asset paths (confined to
            the folder by :mod:`..sources.assets`).
        files_root: the source's folder: a vocabulary table may read a file named by a
            constant only when the file (after symlinks) is inside it (checkpoint graphs).
        allow_file_ops: keep file and network ops (never Python ops).
        outcome: what the message says happened instead (e.g. "it was not loaded").
        allow_ops: op names the owner opted in to (never Python ops).
        artifact: the graph is an artifact this package wrote, loaded by the TF1 loader
            whatever its ``object_graph_def`` says: no Saver op outside ``saver_def``'s.

    Raises:
        MlflowException: naming each op and node (and function), and how to opt in.
    """
    findings = _findings(
        meta_graph.graph_def, meta_graph, asset_tensors, files_root,
        tf2_loader=not artifact and len(meta_graph.object_graph_def.nodes) > 0, artifact=artifact,
    )
    _raise(findings, what, allow_file_ops, allow_ops, outcome)


def check_graph_def(graph_def, what, allow_file_ops=False, *, allow_ops=None):
    """Refuses a serving graph (what goes into the artifact) with an op off the allowlist.

    Example:
        >>> import tensorflow as tf
        >>> from mlflow_eas_savedmodel.graph.ops_policy import check_graph_def
        >>> graph = tf.Graph()
        >>> with graph.as_default():
        ...     _ = tf.io.read_file(tf.compat.v1.placeholder(tf.string), name="read")
        >>> check_graph_def(graph.as_graph_def(), "The model")
        Traceback (most recent call last):
        mlflow.exceptions.MlflowException: The model contains ops off the allowlist of ops known
        to compute without side effects, ops that may touch the file system or the network or
        run Python; the model was not saved:
          node 'read' (ReadFile: file system or network)
        ...
    """
    _raise(_findings(graph_def), what, allow_file_ops, allow_ops, outcome="the model was not saved")
