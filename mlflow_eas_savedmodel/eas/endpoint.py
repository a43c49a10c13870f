"""A local endpoint that answers EAS TensorFlow-processor requests, for smoke tests.

``POST /api/predict/<name>`` takes a serialized ``PredictRequest`` (what the official
``eas-prediction`` client's ``PredictClient.predict(TFRequest)`` sends to
``http://<endpoint>/api/predict/<service name>``) and answers a ``PredictResponse``;
``signature_name`` picks the SignatureDef (empty: the default one) and ``output_filter`` the
outputs (signature output keys; tensor names such as ``"scores/BiasAdd:0"`` work too).

``GET /api/predict/<name>`` describes the default SignatureDef as EAS's TensorFlow processor
does: ``{"signature_name": ..., "inputs": [{"name", "shape", "type"}], "outputs": [...]}``
with ``type`` in ``DT_*`` names and ``-1`` for unknown dimensions (``null`` for an unknown
rank). ``?signature_name=<name>`` describes another SignatureDef; that query parameter is
our addition, EAS documents only the default description.

Bad requests (not a PredictRequest, unknown signature or output, wrong keys, dtypes or
shapes) get ``400`` with a plain-text message that says what to fix; a wrong path ``404``; a
model that fails on a request for reasons of its own ``500``.

With a ``token`` (``serve-eas --token``), ``/api/predict/<name>`` answers ``401`` unless the
request's ``Authorization`` header carries it as EAS's gateway takes it: the token itself (what
EAS's curl examples and the ``eas-prediction`` client with a custom URL send), or the
``eas-prediction`` client's signature ``EAS <base64 HMAC-SHA1>`` keyed with the token over
``POST``, ``Content-MD5`` (checked against the body), ``Content-Type``, ``Date`` and
``/api/predict/<name>`` (what its ``set_token`` sends; ``Date`` is not checked for freshness
here). ``GET /ping`` and
``GET /health`` answer ``200`` as MLflow's scoring server does, without the token (a
readiness probe carries none, and they tell nothing about the model): the endpoint listens
only once the model is loaded, so an answer means it is ready.
The server is stdlib ``ThreadingHTTPServer`` (one thread per connection; the model handle's
``Session.run`` is thread-safe) and binds the loopback interface unless told otherwise.

Layout, the stdlib's: :class:`EasEndpoint` owns the model handle and answers requests as bytes
(``predict_bytes``, ``describe``); ``_EndpointServer`` is the ``ThreadingHTTPServer`` that carries
it; the module-level ``_EasRequestHandler`` reads it as ``self.server.endpoint`` and only maps
HTTP to those calls and their errors to status codes.
"""

import base64
import hashlib
import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, ErrorCode

from mlflow_eas_savedmodel.eas import protocol
from mlflow_eas_savedmodel.errors import invalid_parameter_value

_logger = logging.getLogger(__name__)
PREDICT_PATH = "/api/predict/"
MAX_BODY_BYTES = 1 << 30  # EAS's own gateway limit is far lower; this only guards memory
READINESS_PATHS = ("/ping", "/health")  # MLflow's scoring server's probes
UNAUTHORIZED = (
    "Authorization failed: send the service token in the Authorization header "
    "(eas-prediction: client.set_token(token))."
)


def token_matches(token, headers, method, path, body):
    """Whether ``headers["Authorization"]`` carries ``token`` (bytes) as EAS takes it."""
    header = (headers.get("Authorization") or "").encode("utf-8", "replace")
    if hmac.compare_digest(header, token):
        return True
    if not header.startswith(b"EAS "):
        return False
    content_md5 = hashlib.md5(body).hexdigest()
    if headers.get("Content-MD5") != content_md5:
        return False
    signed = "\n".join(
        (method, content_md5, headers.get("Content-Type") or "", headers.get("Date") or "", path)
    ).strip()
    digest = hmac.new(token, signed.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(header, b"EAS " + base64.b64encode(digest))


def describe_signature(signature_name, description):
    """EAS's JSON description of one SignatureDef (what ``GET`` answers)."""

    def tensors(kind):
        return [
            {"name": key, "shape": t["shape"], "type": protocol.data_type_name(t["dtype"])}
            for key, t in description[kind].items()
        ]

    return {"signature_name": signature_name, "inputs": tensors("inputs"), "outputs": tensors("outputs")}


class EasEndpoint:
    """A running local EAS endpoint for one model handle (close it, or use ``with``).

    Attributes:
        url: the predict URL, ``http://host:port/api/predict/<name>``.
        endpoint: ``host:port``, what ``PredictClient(endpoint, name)`` takes.
    """

    def __init__(self, handle, name, host="127.0.0.1", port=0, token=None):
        if not name or "/" in name:
            raise invalid_parameter_value(
                f"Service name {name!r} must be non-empty and contain no '/'."
            )
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise invalid_parameter_value(
                "The token must be a non-empty string (what clients send in the Authorization "
                "header); leave it out to serve without one."
            )
        self.handle = handle
        self.name = name
        self._token = token.encode("utf-8") if token is not None else None
        self._output_keys = {
            sig: {**{t["name"]: k for k, t in d["outputs"].items()}, **{k: k for k in d["outputs"]}}
            for sig, d in handle.signatures.items()
        }
        self._server = _EndpointServer((host, port), self)
        self.host, self.port = self._server.server_address[:2]
        self.endpoint = f"{self.host}:{self.port}"
        self.url = f"http://{self.endpoint}{PREDICT_PATH}{name}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"eas-endpoint-{name}", daemon=True
        )
        self._thread.start()

    def predict_bytes(self, body):
        """Answers one serialized ``PredictRequest`` with a serialized ``PredictResponse``."""
        signature_name, inputs, output_filter = protocol.decode_request(body)
        runner_name = signature_name or self.handle.default_signature
        outputs = self.handle.predict(inputs, signature_name=runner_name)
        if output_filter:
            known = self._output_keys[runner_name]
            unknown = [o for o in output_filter if o not in known]
            if unknown:
                raise invalid_parameter_value(
                    f"output_filter asks for {unknown}, which signature {runner_name!r} does not "
                    f"output. Its outputs are {sorted(self.handle.signatures[runner_name]['outputs'])}."
                )
            outputs = {known[o]: outputs[known[o]] for o in output_filter}
        return protocol.encode_response(outputs)

    def authorized(self, headers, method, path, body=b""):
        """Whether a request with these headers (a mapping) may use the model (see the module)."""
        if self._token is None:
            return True
        return token_matches(self._token, headers, method, path, body)

    def describe(self, signature_name=None):
        name = signature_name or self.handle.default_signature
        if name not in self.handle.signatures:
            raise invalid_parameter_value(
                f"Unknown signature_name {name!r}. This model has: {sorted(self.handle.signatures)}."
            )
        return describe_signature(name, self.handle.signatures[name])

    def serve_forever(self):
        """Blocks until interrupted (the CLI's ``serve-eas``)."""
        try:
            self._thread.join()
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_input_error(error):
    """TensorFlow's run-time complaints about the fed values (bad shape inside the graph...)."""
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    tf = import_tensorflow()
    return isinstance(error, (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError, ValueError, TypeError))


class _EndpointServer(ThreadingHTTPServer):
    """The HTTP server of one :class:`EasEndpoint`; its handlers reach the endpoint as ``server.endpoint``."""

    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of more simultaneous connections than
    # that got "connection reset by peer" for some of them (seen with 16 clients at once).
    request_queue_size = 128

    def __init__(self, address, endpoint):
        self.endpoint = endpoint
        super().__init__(address, _EasRequestHandler)


class _EasRequestHandler(BaseHTTPRequestHandler):
    """One connection to the endpoint: ``GET`` describes a SignatureDef, ``POST`` predicts."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client's urllib3 pool expects
    server_version = "mlflow-eas-savedmodel"

    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _text(self, status, message):
        self._send(status, message.encode("utf-8"), "text/plain; charset=utf-8")

    def _route(self, body=b""):
        name = self.server.endpoint.name
        parts = urlsplit(self.path)
        if parts.path.rstrip("/") != PREDICT_PATH + name:
            self._text(
                404,
                f"No service at {parts.path}; this endpoint serves "
                f"{PREDICT_PATH}{name}.",
            )
            return None
        if not self.server.endpoint.authorized(self.headers, self.command, PREDICT_PATH + name, body):
            self._text(401, UNAUTHORIZED)
            return None
        return parts

    def do_GET(self):  # noqa: N802 - http.server's naming
        if urlsplit(self.path).path in READINESS_PATHS:
            self._text(200, "\n")  # listening means loaded: see the module docstring
            return
        parts = self._route()
        if parts is None:
            return
        query = parse_qs(parts.query)
        try:
            body = self.server.endpoint.describe((query.get("signature_name") or [None])[0])
        except MlflowException as e:
            self._text(400, e.message)
            return
        self._send(200, json.dumps(body).encode(), "application/json")

    def do_POST(self):  # noqa: N802
        length = self.headers.get("Content-Length")
        well_formed = length is not None and length.isdigit()
        fits = well_formed and int(length) <= MAX_BODY_BYTES
        body = self.rfile.read(int(length)) if fits else b""
        if self._route(body) is None:
            return
        if not fits:
            self.close_connection = True
            self._text(
                413 if well_formed else 400,
                "Send the PredictRequest bytes with a Content-Length header "
                f"(at most {MAX_BODY_BYTES} bytes).",
            )
            return
        endpoint = self.server.endpoint
        try:
            answer = endpoint.predict_bytes(body)
        except MlflowException as e:
            self._text(500 if e.error_code == ErrorCode.Name(INTERNAL_ERROR) else 400, e.message)
            return
        except Exception as e:  # noqa: BLE001 - sorted below into the client's or ours
            if _is_input_error(e):
                self._text(400, f"The model rejected the inputs: {e}")
                return
            _logger.exception("EAS endpoint %s failed", endpoint.name)
            self._text(500, f"Internal error: {type(e).__name__}: {e}")
            return
        self._send(200, answer, "application/octet-stream")

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        _logger.debug("%s - %s", self.address_string(), format % args)


def serve_eas(model_uri, name, host="127.0.0.1", port=0, device="cpu", token=None):
    """Loads ``model_uri`` and serves it as EAS service ``name`` on a background thread.

    Args:
        model_uri: a model saved by this flavor.
        name: the service name in ``/api/predict/<name>``.
        host: the interface to bind (loopback by default; ``0.0.0.0`` exposes it).
        port: the TCP port (``0``: a free one, see ``.port``).
        device: where the model runs (``"cpu"``, ``"gpu"``...).
        token: when set, requests must carry it as their ``Authorization`` header (else 401).

    Returns:
        A running :class:`EasEndpoint`.

    Example:
        >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
        >>> image = keras.Input((4,), name="image")
        >>> keras_model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
        >>> mes.save_model(keras_model, "model", input_example=np.ones((2, 4), "float32"))
        >>> import urllib.request
        >>> from mlflow_eas_savedmodel.eas.endpoint import serve_eas
        >>> from mlflow_eas_savedmodel.eas.protocol import decode_response, encode_request
        >>> with serve_eas("model", "mnist") as ep:  # ep.endpoint is eas-prediction's endpoint
        ...     request = encode_request({"image": np.ones((2, 4), "float32")})
        ...     answer = urllib.request.urlopen(ep.url, request).read()
        >>> decode_response(answer)["scores"].shape
        (2, 3)
    """
    from mlflow_eas_savedmodel.load import load_model

    return EasEndpoint(load_model(model_uri, device=device), name, host=host, port=port, token=token)
