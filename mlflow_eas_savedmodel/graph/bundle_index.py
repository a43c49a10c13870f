"""Rows of a tensor in a ``variables/`` bundle, read from its data file without the rest of it.

``RestoreV2`` with a slice spec returns only the rows asked for, but for a tensor the bundle
stores whole (every ``tf.saved_model.save``, ``model.export()`` and ``Saver.save`` output), its
kernel reads the whole tensor first and copies the slice out: a 256 MiB kernel read in 64 MiB
pieces costs 256 + 64 MiB each time (measured: ``bench --folders``, 331 MiB above the process
for 512 MiB of weights). The bundle format makes the rows addressable directly: its
``.index`` file is a LevelDB-format table (written uncompressed) mapping each tensor's key to a
``BundleEntryProto`` (dtype, shape, shard, byte offset and size in that ``.data`` shard), and a
whole numeric tensor is its values in row-major little-endian order at that offset.

:func:`read_index` parses the table (nothing of TensorFlow runs); :class:`BundleFile` reads rows
``[start, stop)`` of one entry with one read, into the buffer of the tensor it returns. Anything this reader does not know (a
compressed table, a sliced or string entry, a big-endian bundle, offsets past the end of the
file) gives ``None``, and the caller falls back to ``RestoreV2``.
"""

import math
import os
import struct

import numpy as np

from mlflow_eas_savedmodel._tensorflow import import_tensorflow

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_BLOCK_TRAILER = 5  # compression type (1 byte) + crc32c (4 bytes)
_NO_COMPRESSION = 0
_HEADER_KEY = b""
_ALIGN = 64  # EIGEN_MAX_ALIGN_BYTES: TensorFlow shares a numpy buffer aligned so, copies others


def _varint(data, pos):
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _block(f, size, offset, length):
    if offset + length + _BLOCK_TRAILER > size:
        raise ValueError("block past the end of the index")
    f.seek(offset)
    data = f.read(length + _BLOCK_TRAILER)
    if data[length] != _NO_COMPRESSION:
        raise ValueError("compressed index block")
    return data[:length]


def _entries(block):
    """``(key, value)`` of a table block (prefix-compressed keys, then the restart array)."""
    if len(block) < 4:
        raise ValueError("block too short")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise ValueError("bad restart array")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_length > end:
            raise ValueError("bad block entry")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_length]
        pos += value_length


def read_index(prefix):
    """``(BundleHeaderProto, {key: BundleEntryProto})`` of the bundle ``prefix``, or ``None``."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    path = prefix + ".index"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _FOOTER:
                return None
            f.seek(size - _FOOTER)
            footer = f.read(_FOOTER)
            (magic,) = struct.unpack_from("<Q", footer, _FOOTER - 8)
            if magic != _MAGIC:
                return None
            _, pos = _varint(footer, 0)  # the metaindex block: unused
            _, pos = _varint(footer, pos)
            index_offset, pos = _varint(footer, pos)
            index_length, pos = _varint(footer, pos)
            header, entries = None, {}
            for _, handle in _entries(_block(f, size, index_offset, index_length)):
                offset, pos = _varint(handle, 0)
                length, _ = _varint(handle, pos)
                for key, value in _entries(_block(f, size, offset, length)):
                    if key == _HEADER_KEY:
                        header = tensor_bundle_pb2.BundleHeaderProto.FromString(value)
                    else:
                        entries[key.decode()] = tensor_bundle_pb2.BundleEntryProto.FromString(value)
    except (OSError, ValueError, UnicodeDecodeError, Exception):  # noqa: BLE001 - any damage: not ours to read
        return None
    if header is None:
        return None
    return header, entries


class BundleFile:
    """Rows of the whole numeric tensor ``key`` of the bundle ``prefix``, read directly."""

    def __init__(self, prefix, header, entry, shape, np_dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(np_dtype).newbyteorder("<")
        self.offset = entry.offset
        self.path = f"{prefix}.data-{entry.shard_id:05d}-of-{header.num_shards:05d}"
        self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize if self.shape else self.dtype.itemsize

    @classmethod
    def of(cls, prefix, index, key, shape, tf_dtype):
        """The reader of ``key``, or ``None`` where the entry is not a plain whole tensor."""
        from tensorflow.core.protobuf import tensor_bundle_pb2

        if index is None:
            return None
        header, entries = index
        entry = entries.get(key)
        if (
            entry is None or entry.slices or header.endianness != tensor_bundle_pb2.BundleHeaderProto.LITTLE
            or tf_dtype.name in ("string", "resource", "variant") or entry.dtype != tf_dtype.as_datatype_enum
            or [d.size for d in entry.shape.dim] != list(shape)
            or entry.shard_id >= header.num_shards
        ):
            return None
        reader = cls(prefix, header, entry, shape, tf_dtype.as_numpy_dtype)
        expected = math.prod(shape) * reader.dtype.itemsize
        try:
            fits = entry.size == expected and entry.offset + expected <= os.path.getsize(reader.path)
        except OSError:
            return None
        return reader if fits else None

    def read(self, start, stop):
        """Rows ``[start, stop)`` (the whole value for a scalar), as an eager tensor.

        Read into a buffer aligned as TensorFlow's own (64 bytes), which the tensor then uses
        without a copy.
        """
        rows = (stop - start) if self.shape else 1
        n = rows * self.row_bytes
        raw = np.empty(n + _ALIGN, np.uint8)
        skip = -raw.ctypes.data % _ALIGN
        buffer = raw[skip:skip + n]
        with open(self.path, "rb") as f:
            f.seek(self.offset + (start if self.shape else 0) * self.row_bytes)
            got = f.readinto(memoryview(buffer))
        if got != n:
            raise OSError(f"{self.path!r} ended early (truncated while being read)")
        array = buffer.view(self.dtype).reshape(((stop - start),) + self.shape[1:] if self.shape else ())
        return _as_tensor(array)


def _as_tensor(array):
    """``array`` as an eager tensor sharing its buffer (DLPack); the array where it cannot.

    ``tf.constant``/``convert_to_tensor`` of a numpy array copy it, twice (measured: 50 MiB
    became +150 MiB); a DLPack import takes the buffer as it is.
    """
    tf = import_tensorflow()
    try:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    except Exception:  # noqa: BLE001 - a dtype DLPack lacks (bfloat16, bool in old numpy)
        return array
