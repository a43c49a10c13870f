"""Weight values kept out of every ``GraphDef``: stand-ins for freezing, readers for the export.

Why weights never go through a ``GraphDef``: a ``GraphDef`` is one protobuf message, which
cannot pass 2 GiB, and putting a weight into one copies it twice (numpy -> ``TensorProto`` ->
serialized bytes) before :mod:`.variables` would read it back out a third time. Recommendation
models served on EAS hold embedding tables of several GiB. So the pipeline is split in two:

* **The graph** is still produced by TensorFlow's freezer (:mod:`.freeze`), which inlines the
  function library, lowers ``While``/``If`` to v1 control flow and rewrites the dtype of every
  consumer of a resource read, all of which old runtimes need. But the freezer is handed a
  :class:`StandIn` for each variable instead of its value: an object with the variable's shape
  and dtype that ``make_tensor_proto`` turns into a *splat* constant (one element, the full
  shape: a few bytes whatever the variable's size). :mod:`.variables` then replaces each
  stand-in ``Const`` by a ``VariableV2`` of that shape and dtype.
* **The values** stay where the model holds them and are read only by the export, a bounded
  piece at a time (:mod:`mlflow_eas_savedmodel.tensor_bundle` writes them into ``variables/``):
  a :class:`WeightValue` knows a variable's shape and dtype and hands out rows
  ``[start, stop)`` of it. There is one kind per place values live: eager resource variables
  (Keras, ``tf.Module``, TF2 SavedModels), captured eager constants, tensors of a live
  ``tf.compat.v1.Session``, and tensors of a checkpoint or of a source SavedModel's
  ``variables/`` bundle (read with ``RestoreV2`` slices, never whole).

The alternative of rebuilding the serving graph with ``VariableV2`` nodes by hand was rejected:
it would re-implement the freezer's function inlining, control-flow lowering and dtype
propagation, which differ between every kind of op the freezer knows.
"""

import functools
import math
import os

import numpy as np

from mlflow_eas_savedmodel._tensorflow import import_tensorflow


class StandIn:
    """What the freezer gets instead of a variable's value: its shape and dtype, no data.

    ``np.array(stand_in)`` is a 0-d zero, so ``make_tensor_proto(stand_in, dtype, stand_in.shape)``
    writes a one-element constant of the full shape; ``shape`` is also what the freezer copies
    into ``While.output_shapes``.
    """

    def __init__(self, shape, dtype):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(object) if dtype == "string" else np.dtype(dtype)

    def __array__(self, dtype=None, copy=None):
        if self.dtype.kind == "O":
            return np.array(b"", dtype=object)
        return np.zeros((), dtype=dtype or self.dtype)


def stand_in_for(shape, tf_dtype):
    """The :class:`StandIn` of a tensor of ``shape`` and TensorFlow dtype ``tf_dtype``."""
    return StandIn(shape, "string" if tf_dtype.name == "string" else tf_dtype.as_numpy_dtype)


class WeightValue:
    """A variable's value where the model keeps it, read in row ranges.

    Attributes:
        shape: the full shape (a tuple); ``()`` for a scalar.
        dtype: the TensorFlow ``DType``.
    """

    shape = ()
    dtype = None

    @property
    def nbytes(self):
        if self.dtype.name == "string":
            return 0  # unknown until read; strings are never split into pieces
        return math.prod(self.shape) * self.dtype.size

    @property
    def rows(self):
        return self.shape[0] if self.shape else 1

    def read(self, start, stop):
        """Rows ``[start, stop)`` along the first axis (the whole value for a scalar), as a
        tensor or array TensorFlow's ``SaveV2`` takes. Runs in eager mode."""
        raise NotImplementedError

    def is_whole(self, start, stop):
        return not self.shape or (start == 0 and stop == self.shape[0])


class EagerVariableValue(WeightValue):
    """A resource variable of the running program (Keras, ``tf.Module``), read by handle.

    A whole read shares the variable's buffer (no copy); a part is gathered, so a piece of a
    large table never needs the whole table copied even when the variable copies on read
    (tables used by sparse ops do).
    """

    def __init__(self, handle, shape, dtype):
        self.handle, self.shape, self.dtype = handle, tuple(shape), dtype

    def read(self, start, stop):
        tf = import_tensorflow()
        if self.is_whole(start, stop):
            return tf.raw_ops.ReadVariableOp(resource=self.handle, dtype=self.dtype)
        indices = tf.range(start, stop, dtype=tf.int64)
        return tf.raw_ops.ResourceGather(resource=self.handle, indices=indices, dtype=self.dtype)


class EagerTensorValue(WeightValue):
    """A constant the traced function captured (an eager tensor or numpy array)."""

    def __init__(self, tensor):
        self.tensor = tensor
        self.shape, self.dtype = tuple(tensor.shape), tensor.dtype

    def read(self, start, stop):
        return self.tensor if self.is_whole(start, stop) else self.tensor[start:stop]


class ArrayValue(WeightValue):
    """A numpy array (a large constant taken out of the graph)."""

    def __init__(self, array):
        tf = import_tensorflow()
        self.array = array
        self.shape, self.dtype = tuple(array.shape), tf.as_dtype(array.dtype)

    def read(self, start, stop):
        return self.array if self.is_whole(start, stop) else self.array[start:stop]


class SessionVariableValue(WeightValue):
    """A variable of a live ``tf.compat.v1.Session``.

    Parts of a large variable are read through one gather op added to the session's graph
    (a graph that is finalized gets the whole variable read once instead). ``on_error`` turns
    a TensorFlow error (an uninitialised variable) into the user-facing exception.
    """

    def __init__(self, sess, variable_op, shape, dtype, on_error):
        self.sess, self.op, self.shape, self.dtype = sess, variable_op, tuple(shape), dtype
        self.on_error = on_error
        self._gather = None
        self._whole = None

    def _value_tensor(self):
        if self.op.type in ("VariableV2", "Variable"):
            return self.op.outputs[0]
        for consumer in self.op.outputs[0].consumers():
            if consumer.type == "ReadVariableOp":
                return consumer.outputs[0]
        tf = import_tensorflow()
        return self._in_graph(
            lambda: tf.raw_ops.ReadVariableOp(resource=self.op.outputs[0], dtype=self.dtype)
        )

    def _in_graph(self, build):
        graph = self.sess.graph
        with graph.as_default(), graph.name_scope("mlflow_eas_savedmodel_export"):
            return build()

    def _run(self, fetch, feed=None):
        tf = import_tensorflow()
        try:
            return self.sess.run(fetch, feed)
        except tf.errors.OpError as e:
            raise self.on_error(e) from e

    def read(self, start, stop):
        if self.is_whole(start, stop):
            return self._run(self._value_tensor())
        if self.sess.graph.finalized:
            if self._whole is None:
                self._whole = self._run(self._value_tensor())
            part = self._whole[start:stop]
            if stop == self.shape[0]:
                self._whole = None
            return part
        if self._gather is None:
            tf = import_tensorflow()

            def build():
                indices = tf.compat.v1.placeholder(tf.int64, [None], name="rows")
                if self.op.type in ("VariableV2", "Variable"):
                    rows = tf.gather(self.op.outputs[0], indices)
                else:
                    rows = tf.raw_ops.ResourceGather(
                        resource=self.op.outputs[0], indices=indices, dtype=self.dtype
                    )
                return indices, rows

            self._gather = self._in_graph(build)
        indices, rows = self._gather
        return self._run(rows, {indices: np.arange(start, stop, dtype=np.int64)})


class BundleValue(WeightValue):
    """A tensor (or a slice of one: a partition) of a checkpoint / ``variables/`` bundle.

    A whole numeric tensor's rows are read straight from its ``.data`` shard
    (:mod:`.bundle_index`: ``RestoreV2`` would read the whole tensor to slice it); anything
    else with ``RestoreV2`` and a slice spec.
    """

    def __init__(self, prefix, key, shape, dtype, full_shape=None, offset=None):
        self.prefix, self.key, self.shape, self.dtype = prefix, key, tuple(shape), dtype
        self.full_shape = tuple(full_shape) if full_shape is not None else None
        self.offset = tuple(offset) if offset is not None else None
        self._direct = None

    def read(self, start, stop):
        tf = import_tensorflow()
        if self.full_shape is None:
            if self._direct is None:
                from mlflow_eas_savedmodel.graph import bundle_index

                self._direct = bundle_index.BundleFile.of(
                    self.prefix, _bundle_index(self.prefix), self.key, self.shape, self.dtype
                ) or False
            if self._direct:
                return self._direct.read(start, stop)
        if self.full_shape is None and self.is_whole(start, stop):
            spec = ""
        else:
            full = self.full_shape or self.shape
            offset = self.offset or (0,) * len(full)
            lengths = list(self.shape)
            starts = list(offset)
            if self.shape:
                starts[0] += start
                lengths[0] = stop - start
            spec = slice_spec(full, starts, lengths)
        (value,) = tf.raw_ops.RestoreV2(
            prefix=self.prefix, tensor_names=[self.key], shape_and_slices=[spec], dtypes=[self.dtype]
        )
        return value


def _bundle_index(prefix):
    """The parsed ``.index`` of ``prefix`` (:func:`.bundle_index.read_index`), parsed once per file state."""
    try:
        stat = os.stat(prefix + ".index")
    except OSError:
        return None
    return _cached_index(prefix, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _cached_index(prefix, size, mtime_ns):
    from mlflow_eas_savedmodel.graph.bundle_index import read_index

    return read_index(prefix)


def slice_spec(full_shape, starts, lengths):
    """The ``shape_and_slices`` string of ``SaveV2``/``RestoreV2``: ``"10 4 2,5:0,4"``."""
    dims = " ".join(str(int(d)) for d in full_shape)
    parts = ":".join(f"{int(s)},{int(n)}" for s, n in zip(starts, lengths))
    return f"{dims} {parts}"


def bundle_values(prefix, graph, names):
    """:class:`BundleValue` per variable of ``graph`` (by op name) that bundle ``prefix`` holds.

    A variable is looked up under its own name, a partition (``tf.compat.v1.fixed_size_partitioner``)
    as its slice of the full variable (``_save_slice_info``), as ``Saver`` writes them. A
    variable the bundle does not hold with its shape (a ``Saver`` that renamed it) is left out.
    """
    tf = import_tensorflow()
    if not names:
        return {}
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    slice_infos = {}
    for key in (tf.compat.v1.GraphKeys.GLOBAL_VARIABLES, tf.compat.v1.GraphKeys.LOCAL_VARIABLES):
        for variable in graph.get_collection(key):
            info = getattr(variable, "_save_slice_info", None)
            if info is not None:
                slice_infos[variable.op.name] = info
    result = {}
    for name in names:
        op = graph.get_operation_by_name(name)
        dtype = tf.as_dtype(op.get_attr("dtype"))
        shape = tf.TensorShape(op.get_attr("shape"))
        info = slice_infos.get(name)
        key = info.full_name if info is not None else name
        if key not in shapes or dtypes[key] != dtype:
            continue
        if info is not None:
            if list(shapes[key]) != list(info.full_shape):
                continue
            result[name] = BundleValue(
                prefix, key, info.var_shape, dtype, full_shape=info.full_shape, offset=info.var_offset
            )
        elif not shape.is_fully_defined() or shape.as_list() == list(shapes[key]):
            result[name] = BundleValue(prefix, key, shapes[key], dtype)
    return result
