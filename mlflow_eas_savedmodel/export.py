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
"""

import os

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid
from mlflow_eas_savedmodel import tensor_bundle
from mlflow_eas_savedmodel.graph import rewrite
from mlflow_eas_savedmodel.graph.serving_graph import SERVING_TAG, node_name
from mlflow_eas_savedmodel.graph.variables import weights_to_variables

MAIN_OP_KEY = "saved_model_main_op"
MAIN_OP_NAME = "mlflow_eas_init_op"
VARIABLES_DIR = "variables"
VARIABLES_PREFIX = "variables"
SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"


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
        try:
            tf.compat.v1.import_graph_def(graph_def, name="")
        except (ValueError, tf.errors.OpError) as e:
            raise invalid(f"The serving graph does not import into TensorFlow: {e}") from e
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
            raise invalid(
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


def export_saved_model(serving_graph, export_dir):
    """Builds and writes the SavedModel; returns its ``MetaGraphDef``."""
    meta_graph_def, values = build_meta_graph(serving_graph)
    write_saved_model(export_dir, meta_graph_def, values)
    check_layout(export_dir)
    return meta_graph_def


def check_layout(export_dir):
    """Checks the folder is what EAS's TensorFlow processors accept; raises otherwise."""
    entries = set(os.listdir(export_dir))
    if not entries & {SAVED_MODEL_PB, SAVED_MODEL_PBTXT}:
        raise invalid(
            f"{export_dir!r} has no saved_model.pb or saved_model.pbtxt; EAS's TensorFlow "
            "processors need one. Re-export the model."
        )
    unexpected = entries - {SAVED_MODEL_PB, SAVED_MODEL_PBTXT, VARIABLES_DIR, "assets", "assets.extra"}
    if unexpected:
        raise invalid(
            f"{export_dir!r} holds {sorted(unexpected)} beside the SavedModel; EAS expects only "
            "saved_model.pb|pbtxt, variables/ and assets/. Remove them."
        )
    var_dir = os.path.join(export_dir, VARIABLES_DIR)
    if os.path.isdir(var_dir):
        files = os.listdir(var_dir)
        data = [f for f in files if f.startswith(f"{VARIABLES_PREFIX}.data-") and "-of-" in f]
        has_index = f"{VARIABLES_PREFIX}.index" in files
        if (data or has_index) and not (data and has_index):
            raise invalid(
                f"{var_dir!r} must hold both variables.index and variables.data-*-of-* shards "
                f"(found {sorted(files)}). Re-export the model."
            )
        if data:
            total = int(data[0].rsplit("-of-", 1)[1])
            if len(data) != total:
                raise invalid(
                    f"{var_dir!r} has {len(data)} of {total} variables.data shards. Re-export "
                    "the model; a shard is missing."
                )
