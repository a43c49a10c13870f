"""Semantic rules: kernels a runtime registers but refuses for some attr value or shape on CPU.

The registry check (:mod:`.static_check`) sees ops, attrs and input arity; it
cannot see that ``Conv2D`` exists in every runtime yet refuses ``data_format=NCHW`` or grouped
filters on CPU. Each rule here is named, finds the nodes it is about, and lists the runtimes it
leaves out; the rewrites (:mod:`mlflow_eas_savedmodel.graph.rewrite`) remove what they can
first, so a rule only fires on what stays (e.g. a depth that is unknown statically). A rule's
name appears in ``eas_incompatibilities`` and in ``conversion_notes``.

What was measured in the official wheels (``tensorflow==1.12.0``, ``1.14.0``,
``tensorflow-cpu==1.15.0``, ``2.3.0``, ``2.4.0``, ``2.7.0``), each refused at run time on CPU
(the model loads, then ``TF_SessionRun`` fails), while TF 2.21's oneDNN kernels run them:

* channels-first data (rule ``channels-first-on-cpu``): ``Conv2D``, ``MaxPool``, ``AvgPool``,
  ``DepthwiseConv2dNative`` with ``NCHW`` in 1.14-2.7 ("only supports NHWC ... on the CPU"),
  ``Conv2DBackpropInput`` (``Conv2DTranspose``) with ``NCHW``, ``Conv3D``, ``MaxPool3D``,
  ``AvgPool3D``, ``Conv3DBackpropInputV2`` with ``NCDHW`` and ``MaxPoolV2`` with ``NCHW`` in
  all six. ``BiasAdd`` and ``FusedBatchNorm``/``V3`` with ``NCHW`` run everywhere they exist.
  The rewrites transpose all of these but ``MaxPoolV2`` (which 2.21 refuses too).
* grouped convolutions (rule ``grouped-convolution-on-cpu``): ``Conv2D`` whose input depth is a
  multiple of its filter depth: 1.12 refuses the graph at load ("Dimensions must be equal"),
  1.14 "Generic conv implementation does not support grouped convolutions", 1.15, 2.3 and 2.4
  "does not support grouped convolutions on the CPU"; 2.7 runs them. The rewrite splits them
  (or makes them ``DepthwiseConv2dNative`` for one channel per group, ConvNeXt) everywhere.
* XLA must-compile calls (rule ``xla-must-compile``), Keras' ``Conv2D(groups>1)``: 2.3, 2.4 and
  2.7 compile them with XLA and answer; 1.14 and 1.15 run the body with the CPU kernels above
  and fail; 1.12 refuses the call's ``config_proto`` attr at load. The rewrite inlines them.
* ``Conv2D`` with strides and dilations both > 1 runs in every runtime: no rule.

Checked and not turned into rules: the other CPU-kernel limits of the 1.12-2.7 release notes
are about ops that are not on a serving path (``Conv2DBackpropFilter``, ``FractionalMaxPool``
gradients) or that Keras 3 does not emit (quantized ops, ``NCHW_VECT_C``). The probe scripts'
results are what ``tests/runtimes/test_semantic_rules.py`` runs again with ``runtime`` marked tests.
"""

import dataclasses

from mlflow_eas_savedmodel.runtimes import table
from mlflow_eas_savedmodel.runtimes.processors import RUNTIME_VERSIONS
from mlflow_eas_savedmodel.graph.op_facts import CHANNELS_FIRST_ON_CPU as _CHANNELS_FIRST
from mlflow_eas_savedmodel.graph.op_facts import CONV_RANKS
from mlflow_eas_savedmodel.runtimes.incompatibility import Incompatibility


@dataclasses.dataclass(frozen=True)
class Rule:
    """One semantic rule: ``find(graph_def, context) -> [(node, detail)]`` leaves out ``runtimes``."""

    name: str
    why: str
    runtimes: tuple
    find: object


def _graph_nodes(graph_def):
    yield from ((n, None) for n in graph_def.node)
    for f in graph_def.library.function:
        yield from ((n, f.signature.name) for n in f.node_def)


def _find_must_compile(graph_def, context):
    from mlflow_eas_savedmodel.graph.rewrite.xla_calls import is_must_compile_call

    functions = {f.signature.name: f for f in graph_def.library.function}
    return [(n, fn, "") for n, fn in _graph_nodes(graph_def) if is_must_compile_call(n, functions)]


def _find_channels_first(graph_def, context):
    found = []
    for node, fn in _graph_nodes(graph_def):
        fmt = _CHANNELS_FIRST.get(node.op)
        if fmt and "data_format" in node.attr and node.attr["data_format"].s.decode() == fmt:
            found.append((node, fn, f"data_format={fmt}"))
    return found


def _find_grouped_convolutions(graph_def, context):
    from mlflow_eas_savedmodel.graph.rewrite.grouped_conv import grouped_convolution_groups

    convs = [n for n in graph_def.node if n.op in CONV_RANKS]
    if not convs:
        return []
    tensors = context.tensors()
    found = []
    for node in convs:
        try:
            groups = grouped_convolution_groups(node, tensors)
        except KeyError:
            continue
        if groups and groups > 1:
            found.append((node, None, f"{groups} groups"))
    return found


def rules(rows=None):
    """The rules, each leaving out the runtimes whose row of :mod:`.table` (default:
    ``table.ROWS``) says it refuses."""
    return (
        Rule(
            "xla-must-compile",
            table.xla_rule_why(rows),
            table.xla_rule_versions(rows),
            _find_must_compile,
        ),
        Rule(
            "channels-first-on-cpu",
            "its CPU kernel only supports channels-last (NHWC/NDHWC) data",
            table.channels_first_rule_versions(rows),
            _find_channels_first,
        ),
        Rule(
            "grouped-convolution-on-cpu",
            table.grouped_convolution_rule_why(rows),
            table.grouped_convolution_rule_versions(rows),
            _find_grouped_convolutions,
        ),
    )


RULES = rules()


class _Context:
    """Static shapes, computed once and only if a rule needs them."""

    def __init__(self, graph_def):
        self.graph_def, self._tensors = graph_def, None

    def tensors(self):
        if self._tensors is None:
            from mlflow_eas_savedmodel.graph.edit import static_tensors

            # A copy: the import fills default attrs in, which old runtimes must never see.
            copy = type(self.graph_def)()
            copy.CopyFrom(self.graph_def)
            self._tensors = static_tensors(copy)
        return self._tensors


def check_rules(graph_def):
    """``{runtime version: [Incompatibility]}`` of every rule that fires, reason ``rule NAME: ...``."""
    context = _Context(graph_def)
    problems = {v: [] for v in RUNTIME_VERSIONS}
    for rule in RULES:
        for node, function, detail in rule.find(graph_def, context):
            for version in rule.runtimes:
                problems[version].append(
                    Incompatibility(
                        version,
                        node.name,
                        node.op,
                        f"rule {rule.name}: {node.op}" + (f" ({detail})" if detail else "")
                        + f": {rule.why}",
                        function,
                    )
                )
    return problems


def rule_notes(problems):
    """One ``conversion_notes`` line per rule that left runtimes out."""
    left_out = {}
    for version, found in problems.items():
        for p in found:
            if p.reason.startswith("rule "):
                name = p.reason[5:].split(":", 1)[0]
                left_out.setdefault(name, set()).add(version)
    return [
        f"rule {name}: TF {', '.join(sorted(vs, key=RUNTIME_VERSIONS.index))} left out"
        for name, vs in sorted(left_out.items())
    ]
