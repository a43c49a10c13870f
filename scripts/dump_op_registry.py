#!/usr/bin/env python
"""Dump the whole C++ op registry of the installed TensorFlow as gzipped JSON.

Runs unchanged under the old interpreters of the PAI-EAS runtimes (CPython 3.6 with
TensorFlow 1.12 up to CPython 3.9 with TensorFlow 2.7) and under current TensorFlow, so it
keeps to Python 3.6 syntax and needs nothing but TensorFlow.

The registry is read with the C API's ``TF_GetAllOpList()`` after ``import tensorflow``
(``tf.contrib`` is not loaded): through TensorFlow's own Python wrapper of the C API when it
has one (``pywrap_tensorflow`` on 1.x, ``pywrap_tf_session`` on 2.x), else with ctypes on
the wheel's shared library, found by ``mlflow_eas_savedmodel/runtimes/_c_api.py`` (the
runtime check's own discovery; it needs only the standard library, so the script still runs
from a checkout with nothing but TensorFlow installed).

Output schema::

    {"tensorflow": "1.15.0", "git_version": "...", "graph_def_version": 134,
     "python": "3.7.16", "wheel": "tensorflow-cpu==1.15.0",
     "ops": {"MatMul": {"inputs": ["a", "b"], "outputs": ["product"],
                        "attrs": {"transpose_a": "false", "transpose_b": "false", "T": null}},
             ...}}

``inputs``/``outputs`` are the OpDef's ``input_arg``/``output_arg`` names in order; ``attrs``
maps every attr (in OpDef order) to its default rendered as short text, or null when it has
no default.  Renderings: ``true``/``false``, ints, floats as Python ``repr`` of the float32
value, strings JSON-quoted, ``DT_FLOAT``, shapes ``<unknown_rank>``/``<>``/``<2x1>`` (``?``
for an unknown dimension), tensors ``<tensor:XXXXXXXX>`` (first 8 hex digits of the sha1
of the deterministic serialization), functions ``<func:name>``, lists ``[a b c]``.  The file
is written with sorted keys and gzip mtime 0, so equal registries give equal bytes.

Usage::

    python scripts/dump_op_registry.py -o tf-1.15.json.gz [--wheel tensorflow-cpu==1.15.0]
"""
from __future__ import print_function

import argparse
import ctypes
import gzip
import hashlib
import importlib
import io
import json
import os
import platform
import sys

# The wheel's C API library is found the way the runtime check's runner finds it. Appended, not
# prepended: the folder's other modules must not shadow anything the interpreter has installed.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "mlflow_eas_savedmodel", "runtimes"))
from _c_api import TFBuffer, library_candidates  # noqa: E402


def _quiet():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def load_c_api(tf_module, symbol="TF_GetAllOpList"):
    """ctypes handle on the already loaded wheel library that exports ``symbol``."""
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(ctypes, "RTLD_GLOBAL", 0)
    errors = []
    for path in library_candidates(tf_module):
        for m in (mode, getattr(ctypes, "RTLD_GLOBAL", 0)):
            try:
                lib = ctypes.CDLL(path, mode=m)
            except OSError as e:
                errors.append("%s: %s" % (path, e))
                continue
            if hasattr(lib, symbol):
                return lib
            break
    tf_dir = os.path.dirname(os.path.abspath(tf_module.__file__))
    raise RuntimeError("no library of %s exports %s (%s)" % (tf_dir, symbol, "; ".join(errors)))


def all_op_list_bytes(tf_module):
    """Serialized OpList from ``TF_GetAllOpList()``."""
    wrappers = []
    for name in ("tensorflow.python.client.pywrap_tf_session",  # TF 2.x
                 "tensorflow.python.pywrap_tensorflow"):  # TF 1.x
        try:
            wrappers.append(importlib.import_module(name))
        except ImportError:
            pass
    for w in wrappers:
        if hasattr(w, "TF_GetAllOpList") and hasattr(w, "TF_GetBuffer"):
            buf = w.TF_GetAllOpList()
            try:
                return bytes(w.TF_GetBuffer(buf))
            finally:
                if hasattr(w, "TF_DeleteBuffer"):
                    w.TF_DeleteBuffer(buf)
    lib = load_c_api(tf_module, "TF_GetAllOpList")
    lib.TF_GetAllOpList.restype = ctypes.POINTER(TFBuffer)
    lib.TF_GetAllOpList.argtypes = []
    lib.TF_DeleteBuffer.argtypes = [ctypes.POINTER(TFBuffer)]
    buf = lib.TF_GetAllOpList()
    try:
        return ctypes.string_at(buf.contents.data, buf.contents.length)
    finally:
        lib.TF_DeleteBuffer(buf)


def _render_shape(shape):
    if shape.unknown_rank:
        return "<unknown_rank>"
    return "<%s>" % "x".join("?" if d.size < 0 else str(d.size) for d in shape.dim)


def _render_scalar(kind, v):
    from tensorflow.core.framework import types_pb2

    if kind == "s":
        try:
            return json.dumps(v.decode("utf-8"))
        except UnicodeDecodeError:
            return json.dumps(v.decode("latin-1"))
    if kind == "i":
        return str(int(v))
    if kind == "f":
        return repr(float(v))
    if kind == "b":
        return "true" if v else "false"
    if kind == "type":
        return types_pb2.DataType.Name(v)
    if kind == "shape":
        return _render_shape(v)
    if kind == "tensor":
        data = v.SerializeToString(deterministic=True)
        return "<tensor:%s>" % hashlib.sha1(data).hexdigest()[:8]
    if kind == "func":
        return "<func:%s>" % v.name
    raise ValueError(kind)


def render_attr_value(value):
    """Short stable text for an AttrValue."""
    kind = value.WhichOneof("value")
    if kind is None:
        return "<none>"
    if kind == "list":
        items = []
        for field in ("s", "i", "f", "b", "type", "shape", "tensor", "func"):
            for v in getattr(value.list, field):
                items.append(_render_scalar(field, v))
        return "[%s]" % " ".join(items)
    if kind == "placeholder":
        return "$" + value.placeholder
    return _render_scalar(kind, getattr(value, kind))


def op_registry(op_list_bytes):
    from tensorflow.core.framework import op_def_pb2

    op_list = op_def_pb2.OpList()
    op_list.ParseFromString(op_list_bytes)
    ops = {}
    for op in op_list.op:
        attrs = {}
        for a in op.attr:
            attrs[a.name] = render_attr_value(a.default_value) if a.HasField("default_value") else None
        ops[op.name] = {
            "inputs": [arg.name for arg in op.input_arg],
            "outputs": [arg.name for arg in op.output_arg],
            "attrs": attrs,
        }
    return ops


def detect_wheel(tf_version):
    """``name==version`` of the installed TensorFlow distribution."""
    names = ("tensorflow-cpu", "tensorflow", "tensorflow-gpu", "tf-nightly", "tensorflow-intel")
    try:
        from importlib import metadata  # 3.8+

        for n in names:
            try:
                return "%s==%s" % (n, metadata.version(n))
            except metadata.PackageNotFoundError:
                pass
    except ImportError:
        try:
            import pkg_resources

            for n in names:
                try:
                    return "%s==%s" % (n, pkg_resources.get_distribution(n).version)
                except pkg_resources.DistributionNotFound:
                    pass
        except ImportError:
            pass
    return "tensorflow==%s" % tf_version


def dump(wheel=None):
    _quiet()
    import tensorflow as tf

    version_mod = getattr(tf, "version", None)
    git_version = getattr(version_mod, "GIT_VERSION", None) or getattr(tf, "GIT_VERSION", "")
    gdv = getattr(version_mod, "GRAPH_DEF_VERSION", None)
    if gdv is None:
        gdv = getattr(tf, "GRAPH_DEF_VERSION")
    return {
        "tensorflow": tf.__version__,
        "git_version": git_version,
        "graph_def_version": int(gdv),
        "python": platform.python_version(),
        "wheel": wheel or detect_wheel(tf.__version__),
        "ops": op_registry(all_op_list_bytes(tf)),
    }


def write_gz_json(data, path):
    raw = json.dumps(data, sort_keys=True, indent=1, separators=(",", ": ")).encode("utf-8")
    bio = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=bio, mtime=0, compresslevel=9) as gz:
        gz.write(raw + b"\n")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        os.makedirs(d)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(bio.getvalue())
    os.rename(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-o", "--output", required=True, help="output .json.gz path ('-' for stdout JSON)")
    p.add_argument("--wheel", default=None, help="wheel requirement to record (default: detected)")
    args = p.parse_args(argv)
    data = dump(args.wheel)
    if args.output == "-":
        json.dump(data, sys.stdout, sort_keys=True)
        sys.stdout.write("\n")
    else:
        write_gz_json(data, args.output)
        sys.stderr.write(
            "%s: TensorFlow %s (%s), GraphDef %d, python %s, %d ops\n"
            % (args.output, data["tensorflow"], data["wheel"], data["graph_def_version"],
               data["python"], len(data["ops"]))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
