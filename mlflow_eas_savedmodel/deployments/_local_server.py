"""EAS's TensorFlow-processor protocol served from inside an old TensorFlow runtime (standalone script).

Run by the interpreter of an EAS runtime environment (CPython 3.6-3.9, numpy, protobuf 3.x and
the official TensorFlow 1.12-2.7 wheel), so it keeps to Python 3.6 syntax and imports nothing
of this package but ``_runner.py``, the C-API helpers the runtime check already runs in these
interpreters. Usage::

    python _local_server.py SPEC.json

``SPEC.json`` (written by :mod:`mlflow_eas_savedmodel.deployments.local`) holds the SavedModel
folder, the service name, host and port, the warm-up files and count, and the wire format:
the serialized ``FileDescriptorProto`` of :mod:`mlflow_eas_savedmodel.eas.protocol` and its
dtype table, so that the messages are defined in one place only.

The model is loaded as EAS's processors load it, by the C++ loader
(``TF_LoadSessionFromSavedModel`` through the C API), and each request is one ``TF_SessionRun``
of the SignatureDef's tensors. ``POST /api/predict/<name>`` answers a ``PredictResponse``;
``GET /api/predict/<name>`` the JSON description of the default SignatureDef (or
``?signature_name=``) plus ``"tensorflow_version"``. Each request's latency is logged on
stderr; SIGINT and SIGTERM stop the server and close the session. A line ``READY <url>`` on
stdout says the model is loaded and warmed up; so does ``GET /ping`` (and ``/health``), which
answers 200 from then on, as MLflow's scoring server does, without the token. With a
``token`` in the spec, ``/api/predict/<name>`` answers 401 unless the ``Authorization`` header
carries it as EAS's gateway takes it: the token itself, or the ``eas-prediction`` client's
``EAS <HMAC-SHA1 signature>`` (the same rule as :mod:`mlflow_eas_savedmodel.eas.endpoint`).

Layout: ``Model`` (the C API session), ``Codec`` (wire <-> numpy), ``Server`` (a threading
``HTTPServer`` carrying the model, the codec and the TF version) and the module-level ``Handler``
that reads them from ``self.server``, the stdlib's pattern (the same shape as
:mod:`mlflow_eas_savedmodel.eas.endpoint`, which this script cannot import).
"""
from __future__ import print_function

import base64
import ctypes
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

try:
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from socketserver import ThreadingMixIn
    from urllib.parse import parse_qs, urlsplit
except ImportError:  # pragma: no cover - Python 2 is not an EAS runtime
    raise

import numpy as np  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402
from google.protobuf.message import DecodeError  # noqa: E402

_logger = logging.getLogger("eas-local")
PREDICT_PATH = "/api/predict/"
MAX_BODY_BYTES = 1 << 30
READINESS_PATHS = ("/ping", "/health")
UNAUTHORIZED = ("Authorization failed: send the service token in the Authorization header "
                "(eas-prediction: client.set_token(token)).")
_TF_INVALID_ARGUMENT = 3


class RequestError(Exception):
    """A request the caller must fix (answered 400 with the message)."""


def _message_classes(descriptor_bytes):
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(descriptor_bytes))
    factory = message_factory.MessageFactory(pool)
    get = getattr(message_factory, "GetMessageClass", None)

    def cls(name):
        desc = pool.FindMessageTypeByName(name)
        return get(desc) if get else factory.GetPrototype(desc)

    return cls("PredictRequest"), cls("PredictResponse")


class Model(object):
    """The SavedModel loaded by the C++ loader, and one ``TF_SessionRun`` per request."""

    def __init__(self, runner, tf, saved_model_dir, tags, default_signature):
        self.runner = runner
        self.lib = lib = runner.load_c_api(tf)
        for name, res, args in (("TF_DeleteStatus", None, [ctypes.c_void_p]),):
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        status = lib.TF_NewStatus()
        self.graph = lib.TF_NewGraph()
        meta_buf = lib.TF_NewBuffer()
        ctags = (ctypes.c_char_p * len(tags))(*[t.encode("utf-8") for t in tags])
        self.session = lib.TF_LoadSessionFromSavedModel(
            lib.TF_NewSessionOptions(), None, saved_model_dir.encode("utf-8"), ctags, len(tags),
            self.graph, meta_buf, status)
        runner.check_status(lib, status, "TF_LoadSessionFromSavedModel")
        lib.TF_DeleteStatus(status)
        v1 = getattr(getattr(tf, "compat", None), "v1", None)
        meta = (getattr(v1, "MetaGraphDef", None) or tf.MetaGraphDef)()
        meta.ParseFromString(ctypes.string_at(meta_buf.contents.data, meta_buf.contents.length))
        self.signatures = dict(meta.signature_def)
        self.default_signature = default_signature if default_signature in self.signatures \
            else sorted(self.signatures)[0]
        # Output names a filter may use: signature output keys, and their tensor names.
        self.output_keys = {}
        for name, sig in self.signatures.items():
            keys = dict((info.name, key) for key, info in sig.outputs.items())
            keys.update((key, key) for key in sig.outputs)
            self.output_keys[name] = keys

    def signature(self, name):
        name = name or self.default_signature
        if name not in self.signatures:
            raise RequestError("Unknown signature_name %r. This model has: %s."
                               % (name, sorted(self.signatures)))
        return name, self.signatures[name]

    def run(self, signature_name, inputs, output_filter, dt_names):
        """``{output key: array}`` of one request (arrays as the wire decoded them)."""
        name, sig = self.signature(signature_name)
        if sorted(inputs) != sorted(sig.inputs):
            raise RequestError("Signature %r takes inputs %s; the request has %s."
                               % (name, sorted(sig.inputs), sorted(inputs)))
        keys = list(sig.outputs)
        if output_filter:
            unknown = [o for o in output_filter if o not in self.output_keys[name]]
            if unknown:
                raise RequestError("output_filter asks for %s, which signature %r does not output. "
                                   "Its outputs are %s." % (unknown, name, sorted(sig.outputs)))
            keys = [self.output_keys[name][o] for o in output_filter]
        lib, runner = self.lib, self.runner
        in_ops, in_vals = [], []
        try:
            for key in sorted(inputs):
                info, (code, array) = sig.inputs[key], inputs[key]
                if code != info.dtype:
                    raise RequestError("Input %r is %s; signature %r takes %s."
                                       % (key, dt_names.get(code, code), name,
                                          dt_names.get(info.dtype, info.dtype)))
                in_ops.append(runner.graph_output(lib, self.graph, info.name))
                in_vals.append(runner.to_tf_tensor(lib, array, info.dtype))
            out_ops = [runner.graph_output(lib, self.graph, sig.outputs[k].name) for k in keys]
            n_in, n_out = len(in_ops), len(out_ops)
            c_out_vals = (ctypes.c_void_p * max(n_out, 1))()
            status = lib.TF_NewStatus()
            lib.TF_SessionRun(self.session, None, (runner.TFOutput * max(n_in, 1))(*in_ops),
                              (ctypes.c_void_p * max(n_in, 1))(*in_vals), n_in,
                              (runner.TFOutput * max(n_out, 1))(*out_ops), c_out_vals, n_out,
                              None, 0, None, status)
            code = lib.TF_GetCode(status)
            message = lib.TF_Message(status)
            lib.TF_DeleteStatus(status)
            if code == _TF_INVALID_ARGUMENT:
                raise RequestError("The model rejected the inputs: %s"
                                   % (message.decode("utf-8", "replace") if message else ""))
            if code != 0:
                raise RuntimeError("TF_SessionRun failed (TF_Code %d): %s"
                                   % (code, message.decode("utf-8", "replace") if message else ""))
            outputs = {}
            for k, key in enumerate(keys):
                outputs[key] = runner.from_tf_tensor(lib, c_out_vals[k])
                lib.TF_DeleteTensor(c_out_vals[k])
            return outputs
        finally:
            for tensor in in_vals:
                lib.TF_DeleteTensor(tensor)

    def describe(self, signature_name, dt_names, tf_version):
        name, sig = self.signature(signature_name)

        def tensors(infos):
            out = []
            for key in sorted(infos):
                shape = infos[key].tensor_shape
                out.append({"name": key,
                            "shape": None if shape.unknown_rank else [int(d.size) for d in shape.dim],
                            "type": dt_names.get(infos[key].dtype, "DT_INVALID")})
            return out

        return {"signature_name": name, "inputs": tensors(sig.inputs),
                "outputs": tensors(sig.outputs), "tensorflow_version": tf_version}


class Codec(object):
    """``PredictRequest``/``PredictResponse`` <-> numpy, from the package's own wire tables."""

    def __init__(self, spec, runner):
        self.bytes_array = runner.bytes_array  # S arrays would drop trailing NUL bytes
        self.request_cls, self.response_cls = _message_classes(base64.b64decode(spec["descriptor"]))
        self.wire = dict((int(code), (np.dtype(dtype), field))
                         for code, (dtype, field) in spec["wire"].items())
        self.dt_names = dict((int(code), name) for code, name in spec["dt_names"].items())
        self.dt_string = spec["dt_string"]

    def decode_request(self, body):
        request = self.request_cls()
        try:
            request.ParseFromString(body)
        except DecodeError as e:
            raise RequestError("The body is not a serialized EAS PredictRequest (%s). Send the bytes "
                               "of TFRequest.to_string() from eas-prediction." % e) from e
        inputs = {}
        for key, proto in request.inputs.items():
            if proto.dtype not in self.wire:
                raise RequestError("%r has dtype %s, which EAS's TensorFlow protocol cannot carry."
                                   % (key, self.dt_names.get(proto.dtype, proto.dtype)))
            dtype, field = self.wire[proto.dtype]
            shape = tuple(int(d) for d in proto.array_shape.dim)
            if any(d < 0 for d in shape):
                raise RequestError("%r has a negative dimension in array_shape %s." % (key, list(shape)))
            size = 1
            for d in shape:
                size *= d
            values = getattr(proto, field)
            if len(values) != size:
                raise RequestError("%r has array_shape %s (%d values) but carries %d values in %s."
                                   % (key, list(shape), size, len(values), field))
            if proto.dtype == self.dt_string:
                array = self.bytes_array(list(values), shape)
            else:
                array = np.array(values, dtype=dtype).reshape(shape)
            inputs[key] = (proto.dtype, array)
        return request.signature_name or None, inputs, list(request.output_filter)

    def encode_response(self, outputs):
        response = self.response_cls()
        codes = dict((dtype, code) for code, (dtype, _) in self.wire.items() if dtype.kind != "O")
        for key in sorted(outputs):
            array = np.asarray(outputs[key])
            proto = response.outputs[key]
            proto.array_shape.dim.extend(int(d) for d in array.shape)
            if array.dtype.kind in "OSU":
                proto.dtype = self.dt_string
                proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8")
                                        for v in array.reshape(-1).tolist())
                continue
            if array.dtype not in codes:
                raise RuntimeError("output %r is %s, which EAS's TensorFlow protocol cannot carry"
                                   % (key, array.dtype))
            proto.dtype = codes[array.dtype]
            getattr(proto, self.wire[proto.dtype][1]).extend(array.reshape(-1).tolist())
        return response.SerializeToString()


class Server(ThreadingMixIn, HTTPServer):
    """The HTTP server of one service; its handlers read the model and codec from it."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 resets connections of a burst of clients

    def __init__(self, address, service, model, codec, tf_version, token=None):
        self.predict_path = PREDICT_PATH + service
        self.model = model
        self.codec = codec
        self.tf_version = tf_version
        self.token = token.encode("utf-8") if token is not None else None
        HTTPServer.__init__(self, address, Handler)

    def authorized(self, headers, method, body):
        """The token itself, or the eas-prediction client's signature keyed with it."""
        if self.token is None:
            return True
        header = (headers.get("Authorization") or "").encode("utf-8", "replace")
        if hmac.compare_digest(header, self.token):
            return True
        if not header.startswith(b"EAS "):
            return False
        content_md5 = hashlib.md5(body).hexdigest()
        if headers.get("Content-MD5") != content_md5:
            return False
        signed = "\n".join((method, content_md5, headers.get("Content-Type") or "",
                            headers.get("Date") or "", self.predict_path)).strip()
        digest = hmac.new(self.token, signed.encode("utf-8"), hashlib.sha1).digest()
        return hmac.compare_digest(header, b"EAS " + base64.b64encode(digest))


class Handler(BaseHTTPRequestHandler):
    """One connection: ``GET`` describes a SignatureDef, ``POST`` runs one; one log line each."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client's urllib3 pool expects
    server_version = "mlflow-eas-savedmodel-local"

    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._status = status

    def _text(self, status, message):
        self._send(status, message.encode("utf-8"), "text/plain; charset=utf-8")

    def _route(self, body=b""):
        path = self.server.predict_path
        parts = urlsplit(self.path)
        if parts.path.rstrip("/") != path:
            self._text(404, "No service at %s; this endpoint serves %s." % (parts.path, path))
            return None
        if not self.server.authorized(self.headers, self.command, body):
            self._text(401, UNAUTHORIZED)
            return None
        return parts

    def do_GET(self):  # noqa: N802 - http.server's naming
        start = time.time()
        if urlsplit(self.path).path in READINESS_PATHS:
            self._text(200, "\n")  # the server listens only once the model is loaded and warm
            self._log(start, "ready")
            return
        parts = self._route()
        if parts is not None:
            query = parse_qs(parts.query)
            server = self.server
            try:
                body = server.model.describe((query.get("signature_name") or [None])[0],
                                             server.codec.dt_names, server.tf_version)
                self._send(200, json.dumps(body).encode("utf-8"), "application/json")
            except RequestError as e:
                self._text(400, str(e))
        self._log(start, "describe")

    def do_POST(self):  # noqa: N802
        start = time.time()
        length = self.headers.get("Content-Length")
        well_formed = length is not None and length.isdigit()
        fits = well_formed and int(length) <= MAX_BODY_BYTES
        body = self.rfile.read(int(length)) if fits else b""
        signature = "-"
        if self._route(body) is not None:
            if not fits:
                self.close_connection = True
                self._text(413 if well_formed else 400, "Send the PredictRequest bytes with a "
                           "Content-Length header (at most %d bytes)." % MAX_BODY_BYTES)
            else:
                model, codec = self.server.model, self.server.codec
                try:
                    signature_name, inputs, output_filter = codec.decode_request(body)
                    signature = signature_name or model.default_signature
                    outputs = model.run(signature_name, inputs, output_filter, codec.dt_names)
                    self._send(200, codec.encode_response(outputs), "application/octet-stream")
                except RequestError as e:
                    self._text(400, str(e))
                except Exception as e:  # noqa: BLE001 - the processor's own failure
                    _logger.exception("predict failed")
                    self._text(500, "Internal error: %s: %s" % (type(e).__name__, e))
        self._log(start, "signature=%s" % signature)

    def _log(self, start, what):
        _logger.info("%s %s %s %d %.2f ms", self.command, self.path.split("?")[0], what,
                     getattr(self, "_status", 0), (time.time() - start) * 1000.0)

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass  # one line per request comes from _log


def warm_up(model, codec, files, count):
    for path in files:
        with open(path, "rb") as f:
            body = f.read()
        signature_name, inputs, output_filter = codec.decode_request(body)
        for _ in range(count):
            start = time.time()
            model.run(signature_name, inputs, output_filter, codec.dt_names)
            _logger.info("warm-up %s signature=%s %.2f ms", os.path.basename(path),
                         signature_name or model.default_signature, (time.time() - start) * 1000.0)


def main(argv):
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s eas-local: %(message)s")
    with open(argv[1]) as f:
        spec = json.load(f)
    sys.path.insert(0, spec["runner_dir"])
    import _runner  # noqa: E402 - the runtime check's C-API helpers, beside this script's spec
    import tensorflow as tf  # noqa: E402

    codec = Codec(spec, _runner)
    start = time.time()
    try:
        model = Model(_runner, tf, spec["saved_model_dir"], spec["tags"], spec["default_signature"])
    except Exception as e:  # noqa: BLE001 - reported, exit code 2
        sys.stderr.write("eas-local: the TensorFlow %s runtime cannot load the model: %s\n"
                         % (tf.__version__, e))
        return 2
    _logger.info("loaded %s in TensorFlow %s (C++ loader) in %.2f s", spec["saved_model_dir"],
                 tf.__version__, time.time() - start)
    try:
        warm_up(model, codec, spec["warmup_files"], spec["warm_up_count"])
    except Exception as e:  # noqa: BLE001 - EAS does not go live when warm-up fails either
        sys.stderr.write("eas-local: the warm-up request failed: %s\n" % e)
        return 3

    try:
        server = Server((spec["host"], spec["port"]), spec["service_name"], model, codec,
                        tf.__version__, token=spec.get("token"))
    except socket.error as e:
        sys.stderr.write("eas-local: cannot listen on %s:%s: %s\n" % (spec["host"], spec["port"], e))
        return 4
    stopping = threading.Event()

    def stop(signum, frame):
        if not stopping.is_set():
            stopping.set()
            _logger.info("signal %d: stopping", signum)
            threading.Thread(target=server.shutdown).start()  # shutdown() waits for serve_forever

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    url = "http://%s:%d%s%s" % (host, port, PREDICT_PATH, spec["service_name"])
    sys.stdout.write("READY %s\n" % url)
    sys.stdout.flush()
    _logger.info("serving %s (TensorFlow %s); Ctrl-C stops", url, tf.__version__)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    _logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
