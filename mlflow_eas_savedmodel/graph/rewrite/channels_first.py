"""Channels-first ops made channels-last, for the old runtimes' CPU kernels.

:data:`~mlflow_eas_savedmodel.graph.op_facts.CHANNELS_FIRST_REWRITTEN` lists the ops and the
measurement behind them.
"""

from mlflow_eas_savedmodel.graph.op_facts import CHANNELS_FIRST_REWRITTEN as CHANNELS_FIRST_OPS
from mlflow_eas_savedmodel.graph.rewrite.splice import input_tensors, splice


_BACKPROP_OPS = ("Conv2DBackpropInput", "Conv3DBackpropInputV2")
_INPUT_ARG = {"AvgPool": "value"}


def is_channels_first(node):
    return (
        node.op in CHANNELS_FIRST_OPS
        and "data_format" in node.attr
        and node.attr["data_format"].s.decode() == CHANNELS_FIRST_OPS[node.op]
    )


def rewrite_channels_first(graph_def, node, tensors, taken):
    """A channels-first op -> ``Transpose`` to channels-last, the op, ``Transpose`` back (exact)."""
    op = node.op
    rank = len(CHANNELS_FIRST_OPS[op])
    to_last = [0] + list(range(2, rank)) + [1]
    to_first = [0, rank - 1] + list(range(1, rank - 1))
    inputs = input_tensors(node, tensors)

    def permuted(values):
        values = list(values)
        return [values[i] for i in to_last] if len(values) == rank else values

    kwargs = {"data_format": "NHWC" if rank == 4 else "NDHWC"}
    for key in ("strides", "ksize", "dilations"):
        if key in node.attr:
            kwargs[key] = permuted(node.attr[key].list.i)
    kwargs["padding"] = node.attr["padding"].s.decode()
    if "explicit_paddings" in node.attr and node.attr["explicit_paddings"].list.i:
        pairs = list(node.attr["explicit_paddings"].list.i)
        pairs = [pairs[2 * i : 2 * i + 2] for i in range(rank)]
        kwargs["explicit_paddings"] = [p for i in to_last for p in pairs[i]]

    def build(tf, x, *rest):
        fn = getattr(tf.raw_ops, op)
        if op in _BACKPROP_OPS:  # (input_sizes, filter, out_backprop): sizes are a shape vector
            sizes, w, grad = x, rest[0], rest[1]
            result = fn(
                input_sizes=tf.gather(sizes, to_last), filter=w, out_backprop=tf.transpose(grad, to_last), **kwargs
            )
            return tf.transpose(result, to_first)
        last = tf.transpose(x, to_last)
        if rest:
            result = fn(input=last, filter=rest[0], **kwargs)
        else:
            result = fn(**{_INPUT_ARG.get(op, "input"): last}, **kwargs)
        return tf.transpose(result, to_first)

    splice(graph_def, node, build, inputs, taken)
    return op
