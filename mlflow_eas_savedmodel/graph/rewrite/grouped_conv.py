"""Grouped ``Conv2D``/``Conv3D``, which every CPU kernel from 1.12 to 2.21 refuses, split."""

from mlflow_eas_savedmodel.graph.op_facts import CONV_RANKS
from mlflow_eas_savedmodel.graph.rewrite.splice import Skip, input_tensors, splice


def _channel_axis(node, rank):
    data_format = node.attr["data_format"].s.decode() if "data_format" in node.attr else ""
    return 1 if data_format.startswith("NC") else rank - 1


def grouped_convolution_groups(node, tensors):
    """The group count of a ``Conv2D``/``Conv3D`` (input depth / filter depth), 1 if ungrouped.

    ``None`` when the depths are not known statically.
    """
    (_, x_shape), (_, w_shape) = input_tensors(node, tensors)[:2]
    rank = CONV_RANKS[node.op]
    if x_shape.rank != rank or w_shape.rank != rank:
        return None
    depth, filter_depth = x_shape[_channel_axis(node, rank)], w_shape[rank - 2]
    if depth is None or filter_depth is None or filter_depth == 0:
        return None
    return depth // filter_depth if depth != filter_depth else 1


def rewrite_grouped_convolution(graph_def, node, tensors, taken):
    """Grouped ``Conv2D``/``Conv3D`` -> ``Split`` + one convolution per group + ``ConcatV2``, or
    ``DepthwiseConv2dNative`` when each group has one input channel.

    Exact: each output channel of a grouped convolution sums over its group's input channels
    only, which is what the per-group convolution computes. Every CPU kernel from 1.12 to
    2.21 refuses grouped convolutions (``does not support grouped convolutions on the CPU``).
    """
    groups = grouped_convolution_groups(node, tensors)
    if groups is None:
        raise Skip("input or filter depth unknown")
    if groups == 1:
        return None
    inputs = input_tensors(node, tensors)
    attrs = {
        k: node.attr[k]
        for k in ("strides", "padding", "data_format", "dilations", "explicit_paddings")
        if k in node.attr
    }
    if _one_channel_per_group(node, inputs, attrs):
        return _as_depthwise(graph_def, node, inputs, attrs, groups, taken)
    return _per_group(graph_def, node, inputs, attrs, groups, taken)


def _one_channel_per_group(node, inputs, attrs):
    """Whether ``DepthwiseConv2dNative`` computes the grouped ``Conv2D`` (equal spatial strides)."""
    axis = _channel_axis(node, CONV_RANKS[node.op])
    (_, w_shape) = inputs[1]
    strides = list(attrs["strides"].list.i)
    return (
        node.op == "Conv2D"
        and w_shape[2] == 1
        and w_shape.is_fully_defined()
        and strides[1 if axis == 3 else 2] == strides[2 if axis == 3 else 3]
        and not ("explicit_paddings" in attrs and attrs["explicit_paddings"].list.i)
    )


def _as_depthwise(graph_def, node, inputs, attrs, groups, taken):
    # One input channel per group (ConvNeXt, "depthwise" by groups): DepthwiseConv2dNative
    # orders its outputs channel-major like the grouped convolution, so the filter
    # [h, w, 1, groups * m] is the depthwise filter [h, w, groups, m] as it is.
    kh, kw, _, out = inputs[1][1].as_list()
    strides = list(attrs["strides"].list.i)

    def build(tf, x, w):
        kwargs = {"strides": strides, "padding": attrs["padding"].s.decode()}
        for key in ("data_format", "dilations"):
            if key in attrs:
                kwargs[key] = attrs[key].s.decode() if key == "data_format" else list(attrs[key].list.i)
        return tf.raw_ops.DepthwiseConv2dNative(
            input=x, filter=tf.reshape(w, [kh, kw, groups, out // groups]), **kwargs
        )

    splice(graph_def, node, build, inputs, taken)
    return "as DepthwiseConv2dNative"


def _per_group(graph_def, node, inputs, attrs, groups, taken):
    op = node.op
    rank = CONV_RANKS[op]
    axis = _channel_axis(node, rank)

    def build(tf, x, w):
        xs = tf.split(x, groups, axis=axis)
        ws = tf.split(w, groups, axis=rank - 1)
        kwargs = {
            "strides": list(attrs["strides"].list.i),
            "padding": attrs["padding"].s.decode(),
        }
        if "data_format" in attrs:
            kwargs["data_format"] = attrs["data_format"].s.decode()
        if "dilations" in attrs:
            kwargs["dilations"] = list(attrs["dilations"].list.i)
        if op == "Conv2D" and "explicit_paddings" in attrs and attrs["explicit_paddings"].list.i:
            kwargs["explicit_paddings"] = list(attrs["explicit_paddings"].list.i)
        conv = getattr(tf.raw_ops, op)
        return tf.concat([conv(input=xi, filter=wi, **kwargs) for xi, wi in zip(xs, ws)], axis)

    splice(graph_def, node, build, inputs, taken)
    return f"as Split + {op} per group + ConcatV2"
