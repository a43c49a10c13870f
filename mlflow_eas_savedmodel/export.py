"""ServingGraph -> SavedModel folder, written the way EAS's TF 1.12-2.7 runtimes load it.

The SavedModel is what ``tf.compat.v1.saved_model.Builder(...).add_meta_graph_and_variables(
sess, ["serve"], strip_default_attrs=True, clear_devices=True)`` writes, built without a session:

* weight constants (stand-ins without values, see :mod:`.graph.weights`) become
  ``VariableV2`` reads (:mod:`.graph.variables`);
* the MetaGraphDef comes from a Saver over those variables, exported with
  ``strip_default_attrs=True`` (an attr left at its default is dropped, so old runtimes that do
  not know a newer attr such as ``MatMul.grad_a`` never see it) and devices cleared;
* the weights are read from the model a bounded piece at a time and written straight into
  ``variables/variables`` with ``SaveV2`` (:mod:`.tensor_bundle`), the tensor-bundle format
  ``Saver.save`` writes, so they never pass through a ``GraphDef`` or a session;
* table initializers become the ``saved_model_main_op`` that every loader runs after restoring.

:func:`export` is the whole pipeline from a :class:`~.graph.serving_graph.ServingGraph` to a
checked folder, in this order: the ops policy (:mod:`.graph.ops_policy`), :func:`build_meta_graph`,
the static check against every EAS runtime's op registry (:mod:`.runtimes`) and the processor
asked for, :func:`write_saved_model`, :func:`check_layout`, the SHA-256 of every file
(:mod:`.integrity`) and the post-save verification (:mod:`.verify`). It returns the
:class:`~.flavor_conf.FlavorConf` of the SavedModel: what the MLmodel file records about it
(the save adds only its custom objects, :meth:`~.flavor_conf.FlavorConf.from_export`).
"""

import dataclasses
import os
import re

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value, pipeline_stage
from mlflow_eas_savedmodel.flavor_conf import FlavorConf
from mlflow_eas_savedmodel import integrity, runtimes, tensor_bundle
from mlflow_eas_savedmodel.graph import ops_policy, rewrite
from mlflow_eas_savedmodel.graph.layout import (
    ASSETS_DIR,
    ASSETS_EXTRA_DIR,
    MAIN_OP_KEY,
    SAVED_MODEL_PB,
    SAVED_MODEL_PBTXT,
    VARIABLES_DATA_PREFIX,
    VARIABLES_DIR,
    VARIABLES_INDEX,
    VARIABLES_PREFIX,
)
from mlflow_eas_savedmodel.graph.serving_graph import SERVING_TAG, node_name
from mlflow_eas_savedmodel.graph.variables import weights_to_variables
from mlflow_eas_savedmodel.runtimes.table import version_span

MAIN_OP_NAME = "mlflow_eas_init_op"


@dataclasses.dataclass(frozen=True)
class Processor:
    """An EAS processor code the model must run on, and its TensorFlow version."""

    code: str
    version: str

    @classmethod
    def of(cls, code):
        """The processor ``code`` names; an unknown code fails naming the known ones."""
        return cls(code, runtimes.processor_version(code))


def export(
    serving_graph, export_dir, eas_processor=None, *, allow_file_ops=False, verify=True, example=None,
    allow_ops=None,
):
    """Writes ``serving_graph`` as a checked SavedModel into the new folder ``export_dir``.

    Args:
        serving_graph: the source's :class:`~.graph.serving_graph.ServingGraph` (consumed).
        export_dir: the SavedModel folder to create.
        eas_processor: a :class:`Processor` the model must run on, or ``None``: record every
            compatible processor and fail only if there is none.
        allow_file_ops: keep ops that read or write files (see :mod:`.graph.ops_policy`).
        allow_ops: op names off the allowlist to keep (see :mod:`.graph.ops_policy`).
        verify: the ``verify=`` mode of ``save_model`` (see :mod:`.verify`).
        example: the input example as numpy (a dict or an array), or ``None``.

    Returns:
        The :class:`~.flavor_conf.FlavorConf` of the folder (no custom objects: the save adds
        them with :meth:`~.flavor_conf.FlavorConf.from_export`).

    Raises:
        MlflowException: an op the policy refuses, a graph no wanted processor runs, a layout
            EAS rejects, or a verification failure.
    """
    from mlflow_eas_savedmodel import metadata
    from mlflow_eas_savedmodel.runtimes import semantic
    from mlflow_eas_savedmodel.verify import verify_saved_model

    ops_policy.check_graph_def(
        serving_graph.graph_def, f"The {serving_graph.source} model", allow_file_ops,
        allow_ops=allow_ops,
    )
    every = sorted(serving_graph.signatures)
    # Any error but an MlflowException names its stage and the SignatureDefs it concerns.
    with pipeline_stage("rewrite", _signatures_of_failing_node(serving_graph)):
        meta_graph_def, values = build_meta_graph(serving_graph)
        compatible, problems = runtimes.check_all(meta_graph_def.graph_def)
        serving_graph.notes.extend(semantic.rule_notes(problems))
    _check_processors(eas_processor, compatible, problems)
    with pipeline_stage("write", every):
        written = write_saved_model(export_dir, meta_graph_def, values)
        check_layout(export_dir)
        file_sha256 = integrity.hash_tree_reusing(export_dir, written)
    del values  # the weights' readers: the verification loads the weights once more
    with pipeline_stage("verify", every):
        verification = verify_saved_model(
            export_dir, meta_graph_def, reference=serving_graph.reference, example=example, mode=verify
        )
    return FlavorConf(
        source=serving_graph.source,
        tags=[SERVING_TAG],
        signature_defs=metadata.describe_signature_defs(meta_graph_def),
        default_signature=serving_graph.default_signature,
        tensorflow_version=import_tensorflow().__version__,
        eas_processors=compatible,
        eas_incompatibilities={
            v: sorted({p.reason for p in ps})[:5] for v, ps in problems.items() if ps
        },
        conversion_notes=serving_graph.notes,
        verification=verification,
        file_sha256=file_sha256,
        allow_file_ops=bool(allow_file_ops),
        allow_ops=allow_ops or None,
    )


def _signatures_of_failing_node(serving_graph):
    """``error -> names``: the SignatureDefs whose outputs need a node the error message names
    (every SignatureDef when it names none), read off the graph as it is when the error came."""

    def signatures(error):
        quoted = set(re.findall(r"[\w./-]+", str(error)))  # the words that may be node names
        by_name = {n.name: n for n in serving_graph.graph_def.node}
        hit = []
        for name, spec in sorted(serving_graph.signatures.items()):
            seen, pending = set(), [node_name(t) for t in spec.outputs.values()]
            while pending:
                current = pending.pop()
                if current in seen or current not in by_name:
                    continue
                seen.add(current)
                pending.extend(node_name(i.lstrip("^")) for i in by_name[current].input)
            if quoted & seen:
                hit.append(name)
        return hit or sorted(serving_graph.signatures)

    return signatures


def _check_processors(eas_processor, compatible, problems):
    if eas_processor is not None:
        version = eas_processor.version
        if problems[version]:
            raise invalid_parameter_value(
                f"The model cannot run on EAS processor {eas_processor.code!r} (TensorFlow {version}):\n  "
                f"{runtimes.summarize(problems[version])}\n"
                + (
                    f"It can run on: {', '.join(compatible)}. Pass one of those as eas_processor=, "
                    "or eas_processor=None to record all compatible processors."
                    if compatible
                    else "No EAS processor can run it: replace the ops above with older ones."
                )
            )
    elif not compatible:
        # Each problem already starts with its runtime ("TF 1.12: node ...").
        lines = "\n  ".join(runtimes.summarize(ps, limit=3) for ps in problems.values())
        raise invalid_parameter_value(
            f"No EAS TensorFlow processor (TF {version_span()}) can run this model:\n  "
            f"{lines}\nReplace these ops with ones older TensorFlow versions have."
        )


def build_meta_graph(serving_graph):
    """Builds the serving ``MetaGraphDef``; returns ``(meta_graph_def, variable values)``.

    ``serving_graph.graph_def`` is consumed (rewritten in place). The values are
    :class:`~.graph.weights.WeightValue` objects, read only when :func:`write_saved_model`
    writes them.
    """
    tf = import_tensorflow()
    graph_def = serving_graph.graph_def
    serving_graph.notes.extend(rewrite.rewrite_for_old_runtimes(graph_def))
    values, var_nodes = weights_to_variables(
        graph_def, serving_graph.weights, serving_graph.weight_values
    )
    for node in graph_def.node:
        # Colocation hints and devices name nodes and machines of the exporting process only.
        node.device = ""
        if "_class" in node.attr:
            del node.attr["_class"]

    graph = tf.Graph()
    with graph.as_default():
        # A graph that does not import fails the rewrite stage (see export()), naming the
        # SignatureDefs that need the node TensorFlow names.
        tf.compat.v1.import_graph_def(graph_def, name="")
        signature_defs = {
            name: _signature_def(graph, name, spec) for name, spec in serving_graph.signatures.items()
        }
        if serving_graph.init_ops:
            init = tf.group(
                *[graph.get_operation_by_name(node_name(n)) for n in serving_graph.init_ops],
                name=MAIN_OP_NAME,
            )
            graph.add_to_collection(MAIN_OP_KEY, init)
        saver = tf.compat.v1.train.Saver(
            var_list={v: graph.get_tensor_by_name(f"{n}:0") for v, n in var_nodes.items()},
            sharded=True,
            allow_empty=True,
            write_version=tf.compat.v1.train.SaverDef.V2,
        )
        # Only the main op's collection: anything else a library left in the default graph's
        # collections (Keras' eager table set-up does) has no business in the serving graph.
        meta_graph_def = saver.export_meta_graph(
            collection_list=[MAIN_OP_KEY] if serving_graph.init_ops else [],
            clear_devices=True,
            strip_default_attrs=True,
        )
    meta_graph_def.meta_info_def.tags[:] = [SERVING_TAG]
    for name, signature_def in signature_defs.items():
        meta_graph_def.signature_def[name].CopyFrom(signature_def)
    return meta_graph_def, values


def _signature_def(graph, name, spec):
    tf = import_tensorflow()

    def info(kind, key, tensor_name):
        try:
            tensor = graph.get_tensor_by_name(tensor_name)
        except (KeyError, ValueError) as e:
            raise invalid_parameter_value(
                f"Signature {name!r}: {kind} {key!r} names tensor {tensor_name!r}, which is not in "
                "the serving graph. Use a tensor of the model's graph (e.g. 'x:0')."
            ) from e
        return tf.compat.v1.saved_model.utils.build_tensor_info(tensor)

    return tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
        inputs={k: info("input", k, t) for k, t in spec.inputs.items()},
        outputs={k: info("output", k, t) for k, t in spec.outputs.items()},
        method_name=spec.method_name,
    )


def write_saved_model(export_dir, meta_graph_def, values):
    """Writes ``saved_model.pb`` and ``variables/`` into the new folder ``export_dir``.

    Returns:
        ``{path relative to export_dir: hex SHA-256}`` of the ``variables/`` files, hashed as
        they were written (see :mod:`.tensor_bundle`).
    """
    import_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    os.makedirs(os.path.join(export_dir, VARIABLES_DIR))
    saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    saved_model.meta_graphs.add().CopyFrom(meta_graph_def)
    with open(os.path.join(export_dir, SAVED_MODEL_PB), "wb") as f:
        f.write(saved_model.SerializeToString(deterministic=True))
    if not values:
        return {}
    digests = tensor_bundle.write_variables(
        os.path.join(export_dir, VARIABLES_DIR, VARIABLES_PREFIX), values
    )
    return {f"{VARIABLES_DIR}/{name}": digest for name, digest in digests.items()}


def check_layout(export_dir):
    """Checks the folder is what EAS's TensorFlow processors accept; raises otherwise."""
    entries = set(os.listdir(export_dir))
    if not entries & {SAVED_MODEL_PB, SAVED_MODEL_PBTXT}:
        raise invalid_parameter_value(
            f"{export_dir!r} has no saved_model.pb or saved_model.pbtxt; EAS's TensorFlow "
            "processors need one. Re-export the model."
        )
    unexpected = entries - {SAVED_MODEL_PB, SAVED_MODEL_PBTXT, VARIABLES_DIR, ASSETS_DIR, ASSETS_EXTRA_DIR}
    if unexpected:
        raise invalid_parameter_value(
            f"{export_dir!r} holds {sorted(unexpected)} beside the SavedModel; EAS expects only "
            "saved_model.pb|pbtxt, variables/ and assets/. Remove them."
        )
    var_dir = os.path.join(export_dir, VARIABLES_DIR)
    if os.path.isdir(var_dir):
        files = os.listdir(var_dir)
        data = [f for f in files if f.startswith(VARIABLES_DATA_PREFIX) and "-of-" in f]
        has_index = VARIABLES_INDEX in files
        if (data or has_index) and not (data and has_index):
            raise invalid_parameter_value(
                f"{var_dir!r} must hold both variables.index and variables.data-*-of-* shards "
                f"(found {sorted(files)}). Re-export the model."
            )
        if data:
            total = int(data[0].rsplit("-of-", 1)[1])
            if len(data) != total:
                raise invalid_parameter_value(
                    f"{var_dir!r} has {len(data)} of {total} variables.data shards. Re-export "
                    "the model; a shard is missing."
                )
