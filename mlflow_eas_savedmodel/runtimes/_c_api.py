"""Where a TensorFlow wheel keeps its C API, for ctypes (standalone module).

Imported by ``_runner.py`` inside the old runtimes and by ``scripts/dump_op_registry.py`` inside
them and under current TensorFlow, each with this folder on ``sys.path``: Python 3.6 syntax, the
standard library only, no import of this package.
"""

import ctypes
import glob
import os

# The wheels' libraries that may export the C API, likeliest first.
_LIBRARY_PATTERNS = (
    "python/_pywrap_tensorflow_internal.so",  # 1.x up to 2.x (C API linked in)
    "libtensorflow_cc.so*",  # 2.x wheels since ~2.12
    "python/lib_pywrap_tensorflow_common.so",
    "libtensorflow_framework.so*",
)


class TFBuffer(ctypes.Structure):
    """``TF_Buffer`` of ``c_api.h``."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("length", ctypes.c_size_t),
        ("data_deallocator", ctypes.c_void_p),
    ]


def library_candidates(tf_module):
    """Paths of the shared libraries of ``tf_module``'s wheel that may export the C API."""
    tf_dir = os.path.dirname(os.path.abspath(tf_module.__file__))
    # tensorflow(-cpu) 1.15 keeps its libraries in a sibling package, tensorflow_core.
    roots = [tf_dir, os.path.join(os.path.dirname(tf_dir), "tensorflow_core")]
    found = []
    for root in roots:
        for pattern in _LIBRARY_PATTERNS:
            for path in sorted(glob.glob(os.path.join(root, pattern))):
                if path not in found:
                    found.append(path)
    return found
