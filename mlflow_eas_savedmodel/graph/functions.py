"""Traced ``tf.function`` objects -> one :class:`ServingGraph`: the machinery of the TF2 sources.

A TF2 SavedModel folder's ``.signatures`` and the ``input_signature`` methods of a ``tf.Module``
restored from a ``tf.train.Checkpoint`` are concrete functions; each is frozen on its own
(:func:`~.freeze.freeze_concrete_function`: variables as stand-ins, control flow lowered, the
function library inlined), its captured lookup tables are re-created from the live table
(:mod:`.tables`), and the frozen graphs are merged into one, each under its signature's name
as a node-name prefix when there are several. Variables keep their names
(:func:`variable_names`), so two signatures reading one variable share one ``VariableV2``.
The reference of the result runs the traced functions themselves (:mod:`.reference`).

Every traced function travels as one :class:`Endpoint`, from the module that traced it (the
SavedModel source, :mod:`.module`, :mod:`.keras_model`) to the freezer and the reference.
"""

from typing import NamedTuple

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import pipeline_stage
from mlflow_eas_savedmodel.graph import edit, reference
from mlflow_eas_savedmodel.graph.freeze import freeze_concrete_function
from mlflow_eas_savedmodel.graph.serving_graph import (
    PREDICT_METHOD,
    ServingGraph,
    SignatureSpec,
    sanitize_node_name,
)
from mlflow_eas_savedmodel.graph.signatures import pick_default_signature
from mlflow_eas_savedmodel.graph.tables import recreate_tables


class Endpoint(NamedTuple):
    """One traced function to serve as one SignatureDef.

    Attributes:
        name: the SignatureDef's name.
        function: the concrete function (``tf.function(...).get_concrete_function()`` or a
            loaded SavedModel's ``.signatures[name]``).
        input_keys: the SignatureDef's input keys, in the order of the function's flat inputs
            (a function taking keyword arguments is called with these keys).
        output_keys: its output keys, in the order of the function's flat outputs (or the keys
            of the dict it returns).
        method: the SignatureDef's method name; ``None`` for predict.
    """

    name: str
    function: object
    input_keys: list
    output_keys: list
    method: str = None


def variable_names(root):
    """``id(resource handle)`` -> a unique checkpoint name, for every variable ``root`` tracks."""
    tf = import_tensorflow()
    names, taken = {}, set()
    for obj in tf.train.TrackableView(root).descendants():
        if isinstance(obj, tf.Variable) and id(obj.handle) not in names:
            raw = obj.name.split(":")[0]
            names[id(obj.handle)] = edit.unique_name(sanitize_node_name(raw), taken)
    return names


class _LiveTable:
    """A table captured by a traced function, read out through ``LookupTableExportV2``."""

    def __init__(self, handle, key_dtype, value_dtype):
        self.handle, self.key_dtype, self.value_dtype = handle, key_dtype, value_dtype

    def export(self):
        tf = import_tensorflow()
        return tf.raw_ops.LookupTableExportV2(
            table_handle=self.handle, Tkeys=self.key_dtype, Tvalues=self.value_dtype
        )


def _live_tables(graph_def, tables):
    """``id(handle)`` -> :class:`_LiveTable` for each captured table, dtypes from its readers."""
    tf = import_tensorflow()
    readers = edit.consumers(graph_def)
    by_name = {n.name: n for n in graph_def.node}
    result = {}
    for placeholder, handle in tables:
        # Inlined function calls pass the handle on through Identity nodes.
        pending, seen = [placeholder], set()
        while pending and id(handle) not in result:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            for reader in readers.get(name, []):
                node = by_name[reader]
                if "Tin" in node.attr and "Tout" in node.attr:
                    result[id(handle)] = _LiveTable(
                        handle, tf.as_dtype(node.attr["Tin"].type), tf.as_dtype(node.attr["Tout"].type)
                    )
                    break
                if node.op == "Identity":
                    pending.append(reader)
    return result


def concrete_functions_to_serving_graph(endpoints, variables, default_signature=None):
    """Freezes traced functions and merges them into one :class:`ServingGraph`.

    Args:
        endpoints: the :class:`Endpoint` of each signature (names unique).
        variables: ``id(resource handle)`` -> checkpoint name, see :func:`variable_names`.
        default_signature: the signature used when a request names none.
    """
    tf = import_tensorflow()
    merged = tf.compat.v1.GraphDef()
    signatures, weights, weight_values, init_ops = {}, {}, {}, []
    prefixes = set()
    for name, concrete, input_keys, output_keys, method in endpoints:
        graph_def, in_names, out_names, frozen_weights, values, tables = freeze_concrete_function(
            concrete, variables, signatures=[name]
        )
        with pipeline_stage("freeze", [name]):
            table_inits = recreate_tables(graph_def, tables, _live_tables(graph_def, tables)) if tables else []
        out_names = edit.name_outputs(graph_def, out_names, output_keys)
        prefix = "" if len(endpoints) == 1 else edit.unique_name(sanitize_node_name(name), prefixes) + "/"
        if prefix:
            _prefix_nodes(graph_def, prefix)
        merged.node.extend(graph_def.node)
        merged.versions.CopyFrom(graph_def.versions)
        weights.update({prefix + const: var for const, var in frozen_weights.items()})
        weight_values.update(values)
        init_ops.extend(prefix + op for op in table_inits)
        signatures[name] = SignatureSpec(
            inputs={k: prefix + t for k, t in zip(input_keys, in_names)},
            outputs={k: prefix + t for k, t in zip(output_keys, out_names)},
            method_name=method or PREDICT_METHOD,
        )
    default_signature = pick_default_signature(sorted(signatures), default_signature)
    notes = []
    if len(endpoints) > 1:
        notes.append(f"signatures merged into one graph, node names prefixed by signature name ({len(endpoints)})")
    return ServingGraph(
        graph_def=merged,
        signatures=signatures,
        default_signature=default_signature,
        weights=weights,
        weight_values=weight_values,
        init_ops=init_ops,
        notes=notes,
        reference=reference.concrete_function_reference(endpoints),
    )


def _prefix_nodes(graph_def, prefix):
    # Colocation hints name nodes too: left unprefixed, the merged graph does not import
    # (Keras' export() colocates the input's Identity with the input placeholder).
    edit.rename_colocations(graph_def, lambda name: prefix + name)
    for node in graph_def.node:
        node.name = prefix + node.name
        for i, inp in enumerate(node.input):
            control = "^" if inp.startswith("^") else ""
            node.input[i] = control + prefix + inp[len(control):]
