"""The static EAS runtime check on hand-built GraphDefs: ops, attrs, required attrs, arity.

Each graph is written node by node (no TensorFlow tracing), so each case isolates one rule of
:func:`mlflow_eas_savedmodel.runtimes.check_graph` and the processor list ``check_all`` derives.
"""

import pytest
from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel import runtimes
from mlflow_eas_savedmodel.runtimes import PROCESSORS, RUNTIME_VERSIONS, check_all, check_graph


def _graph(*nodes, functions=()):
    """A GraphDef from ``(name, op, inputs, attrs)`` tuples; attrs as AttrValue kwargs."""
    from tensorflow.core.framework import function_pb2, graph_pb2

    graph_def = graph_pb2.GraphDef()
    for name, op, inputs, attrs in nodes:
        _fill(graph_def.node.add(), name, op, inputs, attrs)
    for fname, fnodes in functions:
        function = function_pb2.FunctionDef()
        function.signature.name = fname
        for name, op, inputs, attrs in fnodes:
            _fill(function.node_def.add(), name, op, inputs, attrs)
        graph_def.library.function.add().CopyFrom(function)
    return graph_def


def _fill(node, name, op, inputs, attrs):
    node.name, node.op = name, op
    node.input.extend(inputs)
    for key, value in attrs.items():
        kind, v = value
        if kind == "type":
            node.attr[key].type = v
        elif kind == "b":
            node.attr[key].b = v
        elif kind == "s":
            node.attr[key].s = v
        elif kind == "i":
            node.attr[key].i = v


FLOAT, INT32, VARIANT = ("type", 1), ("type", 3), ("type", 21)
PLACEHOLDER = ("x", "Placeholder", [], {"dtype": FLOAT})


def _reasons(problems):
    return sorted(p.reason for p in problems)


def test_clean_graph_passes_everywhere(tf):
    graph_def = _graph(PLACEHOLDER, ("y", "Relu", ["x"], {"T": FLOAT}))
    assert all(check_graph(graph_def, v) == [] for v in RUNTIME_VERSIONS)
    compatible, problems = check_all(graph_def)
    assert compatible == list(PROCESSORS) and all(p == [] for p in problems.values())


def test_unknown_op_is_named_with_its_node(tf):
    graph_def = _graph(
        PLACEHOLDER,
        ("ids", "Placeholder", [], {"dtype": INT32}),
        ("n", "Placeholder", [], {"dtype": INT32}),
        ("totals", "SegmentSumV2", ["x", "ids", "n"], {"T": FLOAT, "Tindices": INT32, "Tnumsegments": INT32}),
    )
    for version in RUNTIME_VERSIONS:
        (problem,) = check_graph(graph_def, version)
        assert (problem.node, problem.op, problem.function) == ("totals", "SegmentSumV2", None)
        assert str(problem) == (
            f"TF {version}: node 'totals' (SegmentSumV2): op SegmentSumV2 does not exist in TF {version}"
        )
    compatible, _ = check_all(graph_def)
    assert compatible == []


def test_op_added_later_leaves_only_older_runtimes_out(tf):
    graph_def = _graph(PLACEHOLDER, ("e", "Einsum", ["x", "x"], {"equation": ("s", b"ij,jk->ik"), "N": ("i", 2), "T": FLOAT}))
    compatible, problems = check_all(graph_def)
    assert compatible == [p for p, v in PROCESSORS.items() if v not in ("1.12", "1.14")]
    assert _reasons(problems["1.14"]) == ["op Einsum does not exist in TF 1.14"]


def test_unknown_attr_is_named_and_private_attrs_are_ignored(tf):
    graph_def = _graph(
        PLACEHOLDER,
        # MatMul.grad_a exists only in TF 2.12+; strip_default_attrs is what removes it.
        ("mm", "MatMul", ["x", "x"], {"T": FLOAT, "grad_a": ("b", True), "_class": ("s", b"loc:@x")}),
    )
    for version in RUNTIME_VERSIONS:
        assert _reasons(check_graph(graph_def, version)) == [f"attr MatMul.grad_a is unknown to TF {version}"]


def test_missing_required_attr_is_named(tf):
    graph_def = _graph(("x", "Placeholder", [], {}))
    assert _reasons(check_graph(graph_def, "1.12")) == ["attr Placeholder.dtype is required by TF 1.12"]


def test_input_arity_difference_excludes_1_12_for_tensor_lists(tf):
    """1.12 registers TensorListGetItem, with one input fewer: names and attrs alone agree."""
    graph_def = _graph(
        ("handle", "Placeholder", [], {"dtype": VARIANT}),
        ("i", "Placeholder", [], {"dtype": INT32}),
        ("shape", "Placeholder", [], {"dtype": INT32}),
        ("item", "TensorListGetItem", ["handle", "i", "shape"], {"element_dtype": FLOAT}),
    )
    assert "TensorListGetItem" in runtimes.load_registry("1.12")["ops"]
    (problem,) = check_graph(graph_def, "1.12")
    assert problem.reason == (
        "TensorListGetItem takes inputs (input_handle, index) in TF 1.12 but "
        "(input_handle, index, element_shape) in this TensorFlow"
    )
    assert all(check_graph(graph_def, v) == [] for v in RUNTIME_VERSIONS if v != "1.12")
    compatible, _ = check_all(graph_def)
    assert "tensorflow_cpu_1.12" not in compatible and "tensorflow_gpu_1.12" not in compatible
    assert "tensorflow_cpu_1.14" in compatible


def test_function_library_nodes_are_checked(tf):
    """1.14+ refuse unknown ops even in functions serving never calls (DisableCopyOnRead)."""
    graph_def = _graph(
        PLACEHOLDER,
        ("call", "helper", ["x"], {}),  # a call of a library function is not an op
        functions=[
            ("helper", [("e", "Einsum", ["x", "x"], {"equation": ("s", b"ij,jk->ik"), "N": ("i", 2), "T": FLOAT})]),
            ("save_fn", [("v", "DisableCopyOnRead", ["x"], {})]),
        ],
    )
    problems = check_graph(graph_def, "1.15")
    assert [str(p) for p in problems] == [
        "TF 1.15: node 'v' in function 'save_fn' (DisableCopyOnRead): op DisableCopyOnRead does not exist in TF 1.15"
    ]
    problems_1_12 = {(p.function, p.op) for p in check_graph(graph_def, "1.12")}
    assert problems_1_12 == {("helper", "Einsum"), ("save_fn", "DisableCopyOnRead")}


def test_summarize_lists_distinct_problems_up_to_a_limit(tf):
    graph_def = _graph(*[(f"n{i}", f"NoSuchOp{i}", [], {}) for i in range(12)])
    text = runtimes.summarize(check_graph(graph_def, "2.7"), limit=10)
    assert text.count("does not exist in TF 2.7") == 10
    assert text.endswith("... and 2 more")


def test_unknown_processor_code_lists_the_known():
    with pytest.raises(MlflowException, match=r"Unknown EAS processor 'tensorflow_cpu_2.21'. Use one of: tensorflow_cpu_1.12, "):
        runtimes.processor_version("tensorflow_cpu_2.21")
    assert runtimes.processor_version("tensorflow_gpu_1.15") == "1.15"
