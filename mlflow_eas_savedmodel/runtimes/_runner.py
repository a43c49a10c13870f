"""Load and run a SavedModel inside an old TensorFlow runtime (standalone script).

Executed by the interpreter of an EAS runtime environment (CPython 3.6-3.9 with only numpy
and the official TensorFlow 1.12-2.7 wheel installed), so it keeps to Python 3.6 syntax and
imports nothing from this project.  Usage::

    python _runner.py SAVED_MODEL_DIR INPUTS.npz OUTPUTS.npz [--c-api-outputs C.npz]
                      [--report REPORT.json] [--tags serve]
    python _runner.py --batch JOBS.json [--tags serve]

``--batch`` runs several SavedModels one after the other in this one process (each with its own
graphs and sessions), so a table of small models costs one interpreter and one TensorFlow
import per runtime; each job names its own inputs, outputs and report files.

``INPUTS.npz`` holds one array per ``<signature_name>/<input_key>``, both percent-encoded
(``urllib.parse.quote(..., safe="")``) because SignatureDef names such as
``tensorflow/serving/regress`` hold ``/``; every signature named there is run, and so is every one listed in the ``__signatures__`` array (SignatureDefs
without inputs have no array of their own).  String arrays travel as their joined bytes
plus ``<name>#lengths`` (:func:`pack_arrays`), in both directions.

What it does, in order (each stage's result is added to the report, which is rewritten to
``--report`` after every stage so a crash still leaves what was learnt):

(a) C++ loader: ``TF_LoadSessionFromSavedModel`` through the C API (ctypes on the wheel's
    library that ``_c_api.py`` finds, ``_pywrap_tensorflow_internal.so`` in these wheels).  This is the loader EAS's TensorFlow processors
    use; it rejects unknown ops (also inside the function library) and unknown node attrs
    that the Python loader may tolerate.
(c) C API session run: every requested signature is run with ``TF_SessionRun`` on the session
    that (a) loaded, feeding and fetching by the tensor names of the SignatureDef, which is
    what EAS's C++ processor effectively does.  Outputs go to ``--c-api-outputs``.  String
    tensors are converted by hand: the offset table + varint encoding before TF 2.4 and the
    24-byte ``TF_TString`` layout from 2.4 on.
(b) Python TF1 loader: ``tf.compat.v1.saved_model.loader.load`` (``tf.saved_model.loader.load``
    on 1.12) with the tags, then every requested signature is run with ``Session.run``,
    feeding by tensor name.  Outputs go to ``OUTPUTS.npz`` as ``<signature_name>/<output_key>``.

The JSON report printed on stdout (last line) has: ``tensorflow``, ``git_version``,
``python``, ``c_api`` and ``python_loader`` (each ``load_ok``, ``error``, ``signatures_run``,
``run_errors``), ``signatures_available`` and ``requested_signatures``.

``deployments/_local_server.py`` (the EAS-protocol replica in the same old runtimes) imports
this script as a module; its public C-API helpers are what that server calls:
:func:`load_c_api`, :func:`check_status`, :func:`graph_output`, :func:`to_tf_tensor`,
:func:`from_tf_tensor`, :class:`TFOutput` and ``bytes_array``.
"""
from __future__ import print_function

import argparse
import ctypes
import json
import os
import platform
import struct
import sys
import traceback

from urllib.parse import unquote

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import warnings  # noqa: E402

warnings.simplefilter("ignore")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _c_api import TFBuffer, library_candidates  # noqa: E402
from _npz_format import (  # noqa: E402
    SIGNATURES_ARRAY,
    array_name,
    bytes_array,
    pack_arrays,
    split_array_name,
    unpack_arrays,
)

# TF_DataType codes <-> numpy.
_TF_TO_NP = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    8: np.complex64, 9: np.int64, 10: np.bool_, 17: np.uint16, 18: np.complex128,
    19: np.float16, 22: np.uint32, 23: np.uint64,
}
_TF_STRING = 7


class TFOutput(ctypes.Structure):
    _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


def _report_write(report, path):
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(report, fh, sort_keys=True)
        os.rename(tmp, path)


def load_c_api(tf):
    """ctypes handle on the (already loaded) wheel library exporting the C API."""
    for path in library_candidates(tf):
        try:
            lib = ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
        except OSError:
            continue
        if hasattr(lib, "TF_LoadSessionFromSavedModel") and hasattr(lib, "TF_SessionRun"):
            _declare(lib)
            return lib
    raise RuntimeError("no shared library of the TensorFlow wheel exports the C API")


def _declare(lib):
    vp, cp, sz, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int
    sig = {
        "TF_NewStatus": (vp, []), "TF_GetCode": (i, [vp]), "TF_Message": (cp, [vp]),
        "TF_NewSessionOptions": (vp, []), "TF_NewGraph": (vp, []),
        "TF_NewBuffer": (ctypes.POINTER(TFBuffer), []),
        "TF_LoadSessionFromSavedModel": (
            vp, [vp, vp, cp, ctypes.POINTER(cp), i, vp, ctypes.POINTER(TFBuffer), vp]),
        "TF_GraphOperationByName": (vp, [vp, cp]),
        "TF_AllocateTensor": (vp, [i, ctypes.POINTER(ctypes.c_int64), i, sz]),
        "TF_TensorData": (vp, [vp]), "TF_TensorByteSize": (sz, [vp]),
        "TF_TensorType": (i, [vp]), "TF_NumDims": (i, [vp]), "TF_Dim": (ctypes.c_int64, [vp, i]),
        "TF_DeleteTensor": (None, [vp]),
        "TF_SessionRun": (None, [vp, vp, ctypes.POINTER(TFOutput), ctypes.POINTER(vp), i,
                                 ctypes.POINTER(TFOutput), ctypes.POINTER(vp), i,
                                 ctypes.POINTER(vp), i, vp, vp]),
    }
    if hasattr(lib, "TF_StringEncode"):  # < 2.4
        sig["TF_StringEncodedSize"] = (sz, [sz])
        sig["TF_StringEncode"] = (sz, [cp, sz, vp, sz, vp])
        sig["TF_StringDecode"] = (sz, [vp, sz, ctypes.POINTER(vp), ctypes.POINTER(sz), vp])
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args


def check_status(lib, status, what):
    code = lib.TF_GetCode(status)
    if code != 0:
        msg = lib.TF_Message(status)
        raise RuntimeError("%s failed (TF_Code %d): %s"
                           % (what, code, msg.decode("utf-8", "replace") if msg else ""))


_libc = None


def _malloc(n):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None)
        _libc.malloc.restype = ctypes.c_void_p
        _libc.malloc.argtypes = [ctypes.c_size_t]
    p = _libc.malloc(max(n, 1))
    if not p:
        raise MemoryError()
    return p


def to_tf_tensor(lib, arr, tf_dtype):
    """A new TF_Tensor holding ``arr`` as ``tf_dtype`` (the caller keeps ownership)."""
    dims = (ctypes.c_int64 * max(arr.ndim, 1))(*arr.shape) if arr.ndim else None
    if tf_dtype != _TF_STRING:
        a = np.ascontiguousarray(arr, dtype=_TF_TO_NP[tf_dtype])
        t = lib.TF_AllocateTensor(tf_dtype, dims, arr.ndim, a.nbytes)
        if a.nbytes:
            ctypes.memmove(lib.TF_TensorData(t), a.ctypes.data, a.nbytes)
        return t
    items = [x if isinstance(x, bytes) else str(x).encode("utf-8") for x in arr.reshape(-1).tolist()]
    n = len(items)
    status = lib.TF_NewStatus()
    if hasattr(lib, "TF_StringEncode"):  # offsets table + varint-prefixed strings
        sizes = [lib.TF_StringEncodedSize(len(s)) for s in items]
        total = 8 * n + sum(sizes)
        t = lib.TF_AllocateTensor(_TF_STRING, dims, arr.ndim, total)
        base = lib.TF_TensorData(t)
        off = 0
        for k, s in enumerate(items):
            ctypes.memmove(base + 8 * k, struct.pack("<Q", off), 8)
            lib.TF_StringEncode(s, len(s), base + 8 * n + off, sizes[k], status)
            check_status(lib, status, "TF_StringEncode")
            off += sizes[k]
        return t
    # TF >= 2.4: an array of 24-byte TF_TString; small (<= 22 bytes) inline, else "large"
    # with a malloc'd buffer that the tensor frees when it is destroyed.
    t = lib.TF_AllocateTensor(_TF_STRING, dims, arr.ndim, 24 * n)
    base = lib.TF_TensorData(t)
    for k, s in enumerate(items):
        if len(s) <= 22:
            raw = struct.pack("<B", (len(s) << 2) | 0) + s + b"\0" * (23 - len(s))
        else:
            p = _malloc(len(s) + 1)
            ctypes.memmove(p, s + b"\0", len(s) + 1)
            raw = struct.pack("<QQQ", (len(s) << 2) | 1, len(s) + 1, p)
        ctypes.memmove(base + 24 * k, raw, 24)
    return t


def from_tf_tensor(lib, t):
    dtype = lib.TF_TensorType(t)
    shape = tuple(lib.TF_Dim(t, k) for k in range(lib.TF_NumDims(t)))
    n = int(np.prod(shape)) if shape else 1
    base = lib.TF_TensorData(t)
    size = lib.TF_TensorByteSize(t)
    if dtype != _TF_STRING:
        if dtype not in _TF_TO_NP:
            raise TypeError("unsupported output TF_DataType %d" % dtype)
        buf = ctypes.string_at(base, size) if size else b""
        return np.frombuffer(buf, dtype=_TF_TO_NP[dtype]).reshape(shape).copy()
    items = []
    if hasattr(lib, "TF_StringDecode"):
        status = lib.TF_NewStatus()
        start = base + 8 * n
        limit = size - 8 * n
        for k in range(n):
            off = struct.unpack("<Q", ctypes.string_at(base + 8 * k, 8))[0]
            dst = ctypes.c_void_p()
            dlen = ctypes.c_size_t()
            lib.TF_StringDecode(start + off, limit - off, ctypes.byref(dst), ctypes.byref(dlen), status)
            check_status(lib, status, "TF_StringDecode")
            items.append(ctypes.string_at(dst.value, dlen.value) if dlen.value else b"")
    else:
        for k in range(n):
            addr = base + 24 * k
            raw = ctypes.string_at(addr, 24)
            kind = raw[0] & 3
            if kind == 0:  # small
                ln = raw[0] >> 2
                items.append(raw[1:1 + ln])
            elif kind == 1:  # large: size, cap, ptr
                ln, _, p = struct.unpack("<QQQ", raw)
                items.append(ctypes.string_at(p, ln >> 2) if ln >> 2 else b"")
            elif kind == 2:  # offset: size, offset, count (uint32)
                ln, o, _ = struct.unpack("<III", raw[:12])
                items.append(ctypes.string_at(addr + o, ln >> 2) if ln >> 2 else b"")
            else:  # view: size, ptr
                ln, p = struct.unpack("<QQ", raw[:16])
                items.append(ctypes.string_at(p, ln >> 2) if ln >> 2 else b"")
    return bytes_array(items, shape)


def _split_name(tensor_name):
    name, _, idx = tensor_name.rpartition(":")
    if not name or not idx.isdigit():
        return tensor_name, 0
    return name, int(idx)


def graph_output(lib, graph, tensor_name):
    """The ``TF_Output`` of ``graph`` named ``tensor_name`` (``op:index``)."""
    op_name, idx = _split_name(tensor_name)
    op = lib.TF_GraphOperationByName(graph, op_name.encode("utf-8"))
    if not op:
        raise KeyError("operation %r not in the loaded graph" % op_name)
    return TFOutput(op, idx)


def _signature(meta, sig_name, feeds):
    """SignatureDef ``sig_name`` of ``meta`` and ``[(key, TensorInfo)]`` of ``feeds``, by key."""
    if sig_name not in meta.signature_def:
        raise KeyError("signature %r not in the MetaGraphDef" % sig_name)
    sig = meta.signature_def[sig_name]
    inputs = []
    for key in sorted(feeds):
        if key not in sig.inputs:
            raise KeyError("input %r not in signature %r" % (key, sig_name))
        inputs.append((key, sig.inputs[key]))
    return sig, inputs


def _stage_report(error=None):
    return {"load_ok": False, "error": error, "signatures_run": [], "run_errors": {}}


def _as_bytes_array(x):
    a = np.asarray(x)
    if a.dtype == object or a.dtype.kind in "SU":
        return bytes_array([v if isinstance(v, bytes) else str(v).encode("utf-8")
                            for v in a.reshape(-1).tolist()], a.shape)
    return a


def run_c_api(tf, saved_model_dir, tags, requested, meta_cls):
    """Stage (a) and (c). Returns (report dict, outputs dict, meta_graph_def or None)."""
    rep = _stage_report()
    outs = {}
    lib = load_c_api(tf)
    rep["library"] = os.path.basename(lib._name)
    status = lib.TF_NewStatus()
    graph = lib.TF_NewGraph()
    opts = lib.TF_NewSessionOptions()
    meta_buf = lib.TF_NewBuffer()
    ctags = (ctypes.c_char_p * len(tags))(*[t.encode("utf-8") for t in tags])
    sess = lib.TF_LoadSessionFromSavedModel(
        opts, None, saved_model_dir.encode("utf-8"), ctags, len(tags), graph, meta_buf, status)
    try:
        check_status(lib, status, "TF_LoadSessionFromSavedModel")
    except RuntimeError as e:
        rep["error"] = str(e)
        return rep, outs, None
    rep["load_ok"] = True
    meta = meta_cls()
    meta.ParseFromString(ctypes.string_at(meta_buf.contents.data, meta_buf.contents.length))
    for sig_name in sorted(requested):
        feeds = requested[sig_name]
        try:
            sig, inputs = _signature(meta, sig_name, feeds)
            in_ops, in_vals = [], []
            for key, info in inputs:
                in_ops.append(graph_output(lib, graph, info.name))
                in_vals.append(to_tf_tensor(lib, _as_bytes_array(feeds[key])
                                             if info.dtype == _TF_STRING else feeds[key], info.dtype))
            out_keys = sorted(sig.outputs)
            out_ops = [graph_output(lib, graph, sig.outputs[key].name) for key in out_keys]
            n_in, n_out = len(in_ops), len(out_ops)
            c_in = (TFOutput * max(n_in, 1))(*in_ops)
            c_in_vals = (ctypes.c_void_p * max(n_in, 1))(*in_vals)
            c_out = (TFOutput * max(n_out, 1))(*out_ops)
            c_out_vals = (ctypes.c_void_p * max(n_out, 1))()
            lib.TF_SessionRun(sess, None, c_in, c_in_vals, n_in, c_out, c_out_vals, n_out,
                              None, 0, None, status)
            check_status(lib, status, "TF_SessionRun(%s)" % sig_name)
            for k, key in enumerate(out_keys):
                outs[array_name(sig_name, key)] = from_tf_tensor(lib, c_out_vals[k])
                lib.TF_DeleteTensor(c_out_vals[k])
            rep["signatures_run"].append(sig_name)
        except Exception as e:  # noqa: BLE001 - reported
            rep["run_errors"][sig_name] = "%s: %s" % (type(e).__name__, e)
    return rep, outs, meta


def run_python_loader(tf, saved_model_dir, tags, requested):
    """Stage (b): the Python TF1 loader and Session.run."""
    rep = _stage_report()
    outs = {}
    v1 = getattr(getattr(tf, "compat", None), "v1", None)
    loader = None
    if v1 is not None and hasattr(v1, "saved_model") and hasattr(v1.saved_model, "loader"):
        loader = v1.saved_model.loader
    if loader is None:
        loader = tf.saved_model.loader
    session_cls = v1.Session if v1 is not None and hasattr(v1, "Session") else tf.Session
    graph = tf.Graph()
    with graph.as_default():
        sess = session_cls(graph=graph)
        try:
            meta = loader.load(sess, tags, saved_model_dir)
        except Exception as e:  # noqa: BLE001 - reported
            rep["error"] = "%s: %s" % (type(e).__name__, e)
            return rep, outs
        rep["load_ok"] = True
        for sig_name in sorted(requested):
            feeds = requested[sig_name]
            try:
                sig, inputs = _signature(meta, sig_name, feeds)
                feed_dict = {}
                for key, info in inputs:
                    val = feeds[key]
                    if info.dtype == _TF_STRING:
                        val = _as_bytes_array(val).astype(object)
                    elif info.dtype in _TF_TO_NP:
                        val = np.asarray(val, dtype=_TF_TO_NP[info.dtype])
                    feed_dict[info.name] = val
                fetches = dict((k, sig.outputs[k].name) for k in sig.outputs)
                res = sess.run(fetches, feed_dict=feed_dict)
                for key, val in res.items():
                    outs[array_name(sig_name, key)] = _as_bytes_array(val)
                rep["signatures_run"].append(sig_name)
            except Exception as e:  # noqa: BLE001 - reported
                rep["run_errors"][sig_name] = "%s: %s" % (type(e).__name__, e)
        sess.close()
    return rep, outs


def _runner_error(e):
    """Report text of an exception the runner itself raised in a stage."""
    return "runner: %s: %s\n%s" % (type(e).__name__, e, traceback.format_exc())


def _save_npz(path, arrays):
    if path:
        with open(path, "wb") as fh:
            np.savez(fh, **pack_arrays(arrays))


def _read_requested(inputs_path):
    requested = {}
    with np.load(inputs_path, allow_pickle=False) as data:
        arrays = unpack_arrays(data)
    for name, value in arrays.items():
        if name == SIGNATURES_ARRAY:  # every requested signature, those without inputs too
            for sig in value.tolist():
                requested.setdefault(unquote(sig.decode("utf-8")), {})
            continue
        sig, key = split_array_name(name)
        requested.setdefault(sig, {})[key] = value
    return requested


def run_one(tf, meta_cls, saved_model_dir, inputs, outputs, c_api_outputs=None, report_path=None,
            tags=("serve",), skip_c_api=False, skip_python=False):
    """Both loaders on one SavedModel; returns the report (also written to ``report_path``)."""
    saved_model_dir = os.path.abspath(saved_model_dir)
    tags = list(tags)
    requested = _read_requested(inputs)
    version_mod = getattr(tf, "version", None)
    report = {"python": platform.python_version(), "saved_model_dir": saved_model_dir,
              "tags": tags, "requested_signatures": sorted(requested),
              "tensorflow": tf.__version__,
              "git_version": getattr(version_mod, "GIT_VERSION", None) or getattr(tf, "GIT_VERSION", "")}
    _report_write(report, report_path)

    if not skip_c_api:
        try:
            rep, outs, meta = run_c_api(tf, saved_model_dir, tags, requested, meta_cls)
        except Exception as e:  # noqa: BLE001 - reported
            rep, outs, meta = _stage_report(_runner_error(e)), {}, None
        report["c_api"] = rep
        if meta is not None:
            report["signatures_available"] = sorted(meta.signature_def)
        _save_npz(c_api_outputs, outs)
        _report_write(report, report_path)

    if not skip_python:
        try:
            rep, outs = run_python_loader(tf, saved_model_dir, tags, requested)
        except Exception as e:  # noqa: BLE001 - reported
            rep, outs = _stage_report(_runner_error(e)), {}
        report["python_loader"] = rep
        _save_npz(outputs, outs)
        _report_write(report, report_path)
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description="Run a SavedModel in this TensorFlow runtime")
    p.add_argument("saved_model_dir", nargs="?")
    p.add_argument("inputs", nargs="?")
    p.add_argument("outputs", nargs="?")
    p.add_argument("--c-api-outputs", default=None)
    p.add_argument("--report", default=None)
    p.add_argument("--tags", default="serve", help="comma-separated MetaGraph tags")
    p.add_argument("--skip-c-api", action="store_true")
    p.add_argument("--skip-python", action="store_true")
    p.add_argument("--batch", default=None,
                   help="a JSON list of {saved_model_dir, inputs, outputs, c_api_outputs, report}: "
                        "every SavedModel is run in this one process, one after the other")
    args = p.parse_args(argv)
    tags = [t for t in args.tags.split(",") if t]
    if args.batch is None and not (args.saved_model_dir and args.inputs and args.outputs):
        p.error("SAVED_MODEL_DIR INPUTS OUTPUTS are required without --batch")

    if args.report and args.batch is None:
        _report_write({"python": platform.python_version(),
                       "saved_model_dir": os.path.abspath(args.saved_model_dir), "tags": tags}, args.report)
    import tensorflow as tf

    v1 = getattr(getattr(tf, "compat", None), "v1", None)
    meta_cls = getattr(v1, "MetaGraphDef", None) or tf.MetaGraphDef
    if args.batch is not None:
        with open(args.batch) as fh:
            jobs = json.load(fh)
        for job in jobs:
            run_one(tf, meta_cls, job["saved_model_dir"], job["inputs"], job["outputs"],
                    job.get("c_api_outputs"), job.get("report"), tags, args.skip_c_api, args.skip_python)
        sys.stdout.write(json.dumps({"batch": len(jobs), "tensorflow": tf.__version__}) + "\n")
        sys.stdout.flush()
        return 0
    report = run_one(tf, meta_cls, args.saved_model_dir, args.inputs, args.outputs,
                     args.c_api_outputs, args.report, tags, args.skip_c_api, args.skip_python)
    sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
