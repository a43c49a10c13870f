"""``Einsum`` (TF 1.15+) -> ``Sum``/``Transpose``/``Reshape`` + ``MatMul``/``BatchMatMul``.

One- and two-operand equations without repeated labels; others are kept (:class:`~.splice.Skip`).
"""

import collections
import re

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.graph.rewrite.builders import dim, known_rank, shape_vector, size_product
from mlflow_eas_savedmodel.graph.rewrite.splice import Skip, input_tensors, splice


_EINSUM_RE = re.compile(r"^([a-zA-Z.]*)(?:,([a-zA-Z.]*))?(?:->([a-zA-Z.]*))?$")


def _parse_einsum(equation, ranks):
    """``(operand label lists, output labels)`` with ``...`` expanded to fresh labels."""
    match = _EINSUM_RE.match(equation.replace(" ", ""))
    if not match or (match.group(2) is None) != (len(ranks) == 1):
        raise Skip(f"equation {equation!r} is not a one- or two-operand einsum")
    terms = [match.group(1)] + ([match.group(2)] if len(ranks) == 2 else [])
    used = set(re.sub(r"[^a-zA-Z]", "", equation))
    fresh = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in used]
    ellipsis_rank = 0
    operands = []
    for term, rank in zip(terms, ranks):
        if term.count("...") > 1 or term.replace("...", "").count(".") > 0:
            raise Skip(f"equation {equation!r} has a malformed ellipsis")
        named = len(term.replace("...", ""))
        extra = rank - named
        if "..." not in term and extra:
            raise Skip(f"equation {equation!r} does not match the operand ranks {ranks}")
        ellipsis_rank = max(ellipsis_rank, extra if "..." in term else 0)
        operands.append((term, extra))
    ell = fresh[:ellipsis_rank]
    labels = []
    for term, extra in operands:
        before, _, after = term.partition("...")
        labels.append(list(before) + (ell[ellipsis_rank - extra:] if "..." in term else []) + list(after))
    if match.group(3) is not None:
        before, _, after = match.group(3).partition("...")
        output = list(before) + (ell if "..." in match.group(3) else []) + list(after)
    else:
        counts = collections.Counter(l for ls in labels for l in ls if l not in ell)
        output = ell + sorted(l for l, n in counts.items() if n == 1)
    for ls in labels + [output]:
        if len(set(ls)) != len(ls):
            raise Skip(f"equation {equation!r} repeats a label in one term (diagonal)")
    if not set(output) <= {l for ls in labels for l in ls}:
        raise Skip(f"equation {equation!r} has output labels no operand has")
    return labels, output, ell


def rewrite_einsum(graph_def, node, tensors, taken):
    """``Einsum`` (TF 1.15+) -> ``Sum``/``Transpose``/``Reshape`` + ``MatMul``/``BatchMatMul``."""
    tf = import_tensorflow()
    inputs = input_tensors(node, tensors)
    equation = node.attr["equation"].s.decode()
    # Inside a lowered while loop shape inference stops at the Merge of the back edge; the
    # equation still gives the rank of a term without an ellipsis.
    terms = equation.split("->")[0].split(",")
    inputs = [
        (dtype, tf.TensorShape([None] * len(term)))
        if shape.rank is None and "." not in term and len(terms) == len(inputs)
        else (dtype, shape)
        for (dtype, shape), term in zip(inputs, terms)
    ]
    shapes = [shape for _, shape in inputs]
    ranks = [known_rank(s, "an operand") for s in shapes]
    labels, output, ellipsis_labels = _parse_einsum(equation, ranks)
    if len(labels) == 2:
        sizes = {}
        for ls, shape in zip(labels, shapes):
            for label, size in zip(ls, shape.as_list()):
                if label in sizes and sizes[label] != size and label in ellipsis_labels:
                    # Broadcasting inside the ellipsis (1 vs n): BatchMatMul needs equal dims.
                    raise Skip(f"equation {equation!r} broadcasts ellipsis dims {sizes[label]} vs {size}")
                sizes.setdefault(label, size)
        shared_ellipsis = [l for l in ellipsis_labels if l in labels[0] and l in labels[1]]
        if any(sizes[l] is None for l in shared_ellipsis):
            raise Skip(f"equation {equation!r} may broadcast ellipsis dims of unknown size")

    def build(tf, *operands):
        return _einsum(tf, list(operands), [list(ls) for ls in labels], output)

    splice(graph_def, node, build, inputs, taken)
    return "as transpose/reshape + matmul"


def _sum_unused(tf, x, labels, keep):
    """Sums out the labels of ``x`` that no other term uses."""
    axes = [i for i, l in enumerate(labels) if l not in keep]
    if not axes:
        return x, labels
    return tf.reduce_sum(x, axes), [l for l in labels if l in keep]


def _transpose(tf, x, labels, order):
    perm = [labels.index(l) for l in order]
    return x if perm == sorted(perm) else tf.transpose(x, perm)


def _einsum(tf, operands, labels, output):
    if len(operands) == 1:
        x, ls = _sum_unused(tf, operands[0], labels[0], set(output))
        return _transpose(tf, x, ls, output)
    (a, b), (la, lb) = operands, labels
    a, la = _sum_unused(tf, a, la, set(lb) | set(output))
    b, lb = _sum_unused(tf, b, lb, set(la) | set(output))
    size = {}
    for x, ls in ((a, la), (b, lb)):
        for i, label in enumerate(ls):
            if not isinstance(size.get(label), int):
                size[label] = dim(tf, x, i)
    batch = [l for l in output if l in la and l in lb]
    contracted = [l for l in la if l in lb and l not in output]
    free_a = [l for l in la if l not in lb]
    free_b = [l for l in lb if l not in la]

    def grouped(x, ls, groups):
        x = _transpose(tf, x, ls, [l for g in groups for l in g])
        if [len(g) for g in groups] == [1] * len(groups):
            return x
        return tf.reshape(x, shape_vector(tf, [size_product(tf, [size[l] for l in g]) for g in groups]))

    if batch:
        a3 = grouped(a, la, [batch, free_a, contracted])
        b3 = grouped(b, lb, [batch, contracted, free_b])
        product = tf.raw_ops.BatchMatMul(x=a3, y=b3)
    else:
        a3 = grouped(a, la, [free_a, contracted])
        b3 = grouped(b, lb, [contracted, free_b])
        product = tf.raw_ops.MatMul(a=a3, b=b3)
    result_labels = batch + free_a + free_b
    groups = [batch, free_a, free_b] if batch else [free_a, free_b]
    if [len(g) for g in groups] != [1] * len(groups):
        product = tf.reshape(product, shape_vector(tf, [size[l] for l in result_labels]))
    return _transpose(tf, product, result_labels, output)
