"""How arrays cross between this package and ``_runner.py`` in ``.npz`` files.

Each input or output is one array named ``quote(signature)/quote(key)`` (:func:`array_name`):
SignatureDef names such as ``tensorflow/serving/regress`` hold ``/``. The signatures to run are
also listed in :data:`SIGNATURES_ARRAY`, since a SignatureDef without inputs has no array.

A string array travels as its values joined (``uint8``) plus ``<name>#lengths``: numpy's ``S``
dtype drops each value's trailing NUL bytes, which a serialized ``tf.Example`` can end in, and
object arrays would need pickles. ``quote()`` encodes ``#``, so no array name ends like this.

Imported by :mod:`.runtime_process` (TF 2.21 side) and by ``_runner.py`` inside the old runtimes
(CPython 3.6+, numpy 1.16+): Python 3.6 syntax, numpy and the standard library only, no side
effects.
"""

from urllib.parse import quote, unquote

import numpy as np

LENGTHS_SUFFIX = "#lengths"
SIGNATURES_ARRAY = "__signatures__"


def array_name(signature, key):
    """The npz name of one input or output of SignatureDef ``signature``."""
    return "%s/%s" % (quote(signature, safe=""), quote(key, safe=""))


def split_array_name(name):
    """``(signature, key)`` of an :func:`array_name`."""
    signature, _, key = name.partition("/")
    return unquote(signature), unquote(key)


def bytes_array(items, shape):
    """An object array of ``bytes`` (never ``S``, which strips trailing NULs) of ``shape``."""
    arr = np.empty(len(items), dtype=object)
    arr[:] = list(items)
    return arr.reshape(shape)


def pack_arrays(arrays):
    """``{name: array}`` ready for ``np.savez`` (no pickles), strings length-preserving."""
    out = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype == object or a.dtype.kind in "SU":
            items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in a.reshape(-1).tolist()]
            out[name] = np.frombuffer(b"".join(items), dtype=np.uint8)
            out[name + LENGTHS_SUFFIX] = np.array([len(v) for v in items], dtype=np.int64).reshape(a.shape)
        else:
            out[name] = a
    return out


def unpack_arrays(data):
    """The inverse of :func:`pack_arrays` on an opened ``.npz`` file."""
    out = {}
    for name in data.files:
        if name.endswith(LENGTHS_SUFFIX):
            continue
        value = data[name]
        if name + LENGTHS_SUFFIX in data.files:
            lengths = data[name + LENGTHS_SUFFIX]
            raw, items, offset = value.tobytes(), [], 0
            for n in lengths.reshape(-1).tolist():
                items.append(raw[offset:offset + n])
                offset += n
            value = bytes_array(items, lengths.shape)
        out[name] = value
    return out
