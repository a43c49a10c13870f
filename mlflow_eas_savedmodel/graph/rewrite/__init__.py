"""Rewrites that widen the set of EAS runtimes a frozen graph loads in.

Keras 3 on TF 2.21 emits four ops that old EAS runtimes lack (measured, see the shared
reference): ``SelectV2`` (TF 1.13+; ``Embedding``, masking), ``BatchMatMulV2`` (1.13+; dense
layers on 3-D inputs, attention), ``Einsum`` (1.15+; attention scores) and ``LeakyRelu`` (1.13+;
Keras ``LeakyReLU``). Estimator-era ``embedding_column``\s add ``SparseSegmentMean``/``SqrtN``/``Sum``
on int64 segment ids (TF 2.3+), which a cast to int32 makes 1.x-loadable; TF 1.15's own
exports add ``FusedBatchNormV3`` (``tf.layers``/contrib batch norm), which at inference is
``FusedBatchNormV2`` plus a training-only output. Each has an exact
equivalent in ops that TF 1.12 registers, so rewriting them lets a model that is otherwise
1.12-clean run on every processor.

The mechanism is one splice (:func:`.splice.splice`): the replacement is built with ordinary TensorFlow
calls in a scratch ``tf.Graph`` whose placeholders stand for the replaced node's inputs; its
``GraphDef`` is grafted in with names prefixed by the replaced node's name, placeholder reads
rewired to the original inputs, and the final node takes the replaced node's name, so consumers
are untouched. Builders call only ops 1.12 has (``tf.raw_ops.Select``/``BatchMatMul`` where the
Python API would emit the V2 op; ``Tile`` rather than ``BroadcastTo`` for broadcasting);
``tests/flavor/test_keras_architectures.py`` checks the rewritten graphs against the 1.12 registry.

A node that needs no rewrite is left alone (``SelectV2`` whose inputs have one static shape is
only renamed; one whose inputs' ranks are unknown is broadcast at run time), and a node that
cannot be rewritten exactly (``BatchMatMulV2`` of unknown rank, an ``Einsum`` with repeated
labels or more than two operands, ``FusedBatchNormV3`` in training mode) is kept and reported
in the notes: the runtime check
still decides compatibility afterwards, so nothing is claimed that the graph cannot do.

Modules, one concern each: :mod:`.splice` (the splice and its node edits), :mod:`.builders`
(broadcasting and shapes for the builders), :mod:`.op_versions` (ops newer than 1.12),
:mod:`.einsum`, :mod:`.xla_calls` (must-compile calls inlined), :mod:`.channels_first` and
:mod:`.grouped_conv` (what the old CPU kernels refuse).
"""

import collections

from mlflow_eas_savedmodel.graph import edit
from mlflow_eas_savedmodel.graph.op_facts import CONV_RANKS
from mlflow_eas_savedmodel.graph.rewrite.channels_first import is_channels_first, rewrite_channels_first
from mlflow_eas_savedmodel.graph.rewrite.grouped_conv import rewrite_grouped_convolution
from mlflow_eas_savedmodel.graph.rewrite.op_versions import rewrite_newer_ops
from mlflow_eas_savedmodel.graph.rewrite.splice import REWRITE_SCOPE, Skip, drop_cleared
from mlflow_eas_savedmodel.graph.rewrite.xla_calls import inline_must_compile_calls


__all__ = ["REWRITE_SCOPE", "rewrite_for_old_runtimes", "rewrite_xla_and_grouped_convolutions"]


def rewrite_for_old_runtimes(graph_def):
    """Applies every rewrite in place; returns one note per kind of change made or refused."""
    xla_notes = rewrite_xla_and_grouped_convolutions(graph_def)
    return xla_notes + rewrite_newer_ops(graph_def)


def rewrite_xla_and_grouped_convolutions(graph_def):
    """Inlines XLA must-compile calls, makes channels-first ops channels-last, splits grouped
    convolutions: what the old runtimes' CPU kernels refuse; returns notes."""
    notes = []
    inlined = inline_must_compile_calls(graph_def)
    if inlined:
        notes.append(f"XLA must-compile calls inlined into plain ops: {inlined}")
    notes.extend(_channels_last(graph_def))
    notes.extend(_split_grouped_convolutions(graph_def))
    return notes


def _channels_last(graph_def):
    if not any(is_channels_first(n) for n in graph_def.node):
        return []
    tensors = edit.static_tensors(graph_def)
    taken = {n.name for n in graph_def.node}
    done = collections.Counter(
        rewrite_channels_first(graph_def, n, tensors, taken)
        for n in [n for n in graph_def.node if is_channels_first(n)]
    )
    drop_cleared(graph_def)
    return [
        "channels-first ops made channels-last for CPU kernels (transpose, op, transpose): "
        + ", ".join(f"{n} {op}" for op, n in sorted(done.items()))
    ]


def _split_grouped_convolutions(graph_def):
    convs = [n for n in graph_def.node if n.op in CONV_RANKS]
    if not convs:
        return []
    tensors = edit.static_tensors(graph_def)
    taken = {n.name for n in graph_def.node}
    done = collections.Counter()
    for node in convs:
        try:
            how = rewrite_grouped_convolution(graph_def, node, tensors, taken)
        except Skip:
            continue  # depths unknown: the semantic rule cannot see a group either
        if how:
            done[how] += 1
    drop_cleared(graph_def)
    return [f"grouped convolution rewritten for CPU kernels: {n} {how}" for how, n in sorted(done.items())]
