"""Helpers of the replacement builders: broadcasting, sizes and shapes in ops TF 1.12 has."""

import functools

from mlflow_eas_savedmodel.graph.rewrite.splice import Skip


def broadcast(tf, x, target_shape, rank):
    """``x`` tiled to ``target_shape`` (a rank-``rank`` int32 vector): broadcasting for 1.12.

    ``BroadcastTo`` is avoided on purpose: ``Reshape`` + ``Tile`` have had CPU and GPU kernels
    for every dtype since TF 1.0. ``max(dim, 1)`` keeps empty batches (0 / 0) well defined.
    """
    if x.shape.rank < rank:
        ones = tf.ones([rank - x.shape.rank], tf.int32)
        x = tf.reshape(x, tf.concat([ones, tf.shape(x)], 0))
    multiples = tf.math.floordiv(target_shape, tf.maximum(tf.shape(x), 1))
    return tf.tile(x, multiples)


def dim(tf, x, axis):
    """Size of ``x`` along ``axis``: a Python int when static, else a scalar tensor."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def size_product(tf, sizes):
    static = functools.reduce(lambda a, b: a * b, [s for s in sizes if isinstance(s, int)], 1)
    dynamic = [s for s in sizes if not isinstance(s, int)]
    if not dynamic:
        return static
    total = functools.reduce(tf.multiply, dynamic)
    return total * static if static != 1 else total


def shape_vector(tf, sizes):
    """A shape argument from ints and scalar tensors (``Pack`` only when some are dynamic)."""
    if all(isinstance(s, int) for s in sizes):
        return list(sizes)
    return tf.stack([tf.constant(s, tf.int32) if isinstance(s, int) else s for s in sizes])


def known_rank(shape, what):
    if shape.rank is None:
        raise Skip(f"{what} has unknown rank")
    return shape.rank


def broadcast_any_rank(tf, x, target_shape):
    """:func:`broadcast` for an ``x`` whose rank is only known at run time."""
    ones = tf.fill(tf.expand_dims(tf.size(target_shape) - tf.rank(x), 0), 1)
    x = tf.reshape(x, tf.concat([ones, tf.shape(x)], 0))
    multiples = tf.math.floordiv(target_shape, tf.maximum(tf.shape(x), 1))
    return tf.tile(x, multiples)
