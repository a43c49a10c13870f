"""The official ``eas-prediction`` client in its own cached environment.

``eas-prediction`` pins ``protobuf<=3.20.3``, which cannot live beside TensorFlow 2.21, so
it gets a venv of its own under ``<cache>/clients/eas-prediction``, built once from a CPython
3.9 interpreter by the same cached-venv builder as the runtime environments
(:func:`~mlflow_eas_savedmodel.runtimes.venvs.ensure_venv`, same cache root). The tests use it
to prove that what this package writes and serves is what the real client writes and reads.

This module does not import TensorFlow.
"""

import json
import logging
import os
import subprocess

from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.runtimes.venvs import VenvSpec, cache_root, ensure_venv

CLIENT_REQUIREMENT = "eas-prediction==0.36"
CLIENT_PYTHON = "3.9"
_MARKER = ".mlflow-eas-client.json"
_logger = logging.getLogger(__name__)


def client_env_dir():
    return os.path.join(cache_root(), "clients", "eas-prediction")


def ensure_client_python():
    """The python executable of the cached ``eas-prediction`` venv (built on first use)."""
    spec = VenvSpec(
        path=client_env_dir(),
        marker_name=_MARKER,
        marker={"requirement": CLIENT_REQUIREMENT},
        python_minor=CLIENT_PYTHON,
        requirements=(CLIENT_REQUIREMENT,),
        import_check="eas_prediction",
        label="eas-prediction client",
        description="eas-prediction client",
    )
    python, _ = ensure_venv(spec, _logger)
    return python


def run_client_script(script, *args, timeout=120):
    """Runs Python source ``script`` with the official client; returns its parsed JSON stdout."""
    python = ensure_client_python()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    proc = subprocess.run(
        [python, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env,
    )
    if proc.returncode:
        raise MlflowException(
            f"The eas-prediction client script failed ({proc.returncode}):\n"
            + proc.stderr.decode("utf-8", "replace")[-3000:]
        )
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


# Runs in the client's venv (Python 3.9, protobuf 3.20): a list of operations in, results out.
# Values travel as JSON; bytes (string tensors, serialized messages) as base64.
_OPS_SCRIPT = r'''
import base64, json, sys
from eas_prediction import PredictClient, TFRequest
from eas_prediction import tf_request_pb2 as pb
from eas_prediction.exception import PredictException

FIELDS = {pb.DT_FLOAT: "float_val", pb.DT_DOUBLE: "double_val", pb.DT_INT64: "int64_val",
          pb.DT_BOOL: "bool_val", pb.DT_STRING: "string_val"}

def array_json(proto):
    field = FIELDS.get(proto.dtype, "int_val")
    values = list(getattr(proto, field))
    if proto.dtype == pb.DT_STRING:
        values = [base64.b64encode(v).decode() for v in values]
    return {"dtype": proto.dtype, "shape": list(proto.array_shape.dim), "values": values}

def request_of(op):
    req = TFRequest(op.get("signature_name"))
    for name, shape, dtype, values in op["feeds"]:
        if dtype == TFRequest.DT_STRING:
            values = [base64.b64decode(v) for v in values]
        req.add_feed(name, shape, dtype, values)
    for name in op.get("fetches", []):
        req.add_fetch(name)
    return req

def run(op):
    kind = op["op"]
    if kind == "encode":
        return base64.b64encode(request_of(op).to_string()).decode()
    if kind == "parse_request":
        msg = pb.PredictRequest()
        msg.ParseFromString(base64.b64decode(op["data"]))
        return {"signature_name": msg.signature_name, "output_filter": list(msg.output_filter),
                "inputs": {k: array_json(v) for k, v in msg.inputs.items()}}
    if kind == "parse_response":
        resp = pb.PredictResponse()
        resp.ParseFromString(base64.b64decode(op["data"]))
        return {k: array_json(v) for k, v in resp.outputs.items()}
    if kind == "predict":
        client = PredictClient(op["endpoint"], op["service"])
        client.set_retry_count(1)
        client.set_timeout(30000)
        if op.get("token"):
            client.set_token(op["token"])
        client.init()
        try:
            if "data" in op:  # a raw request body, e.g. a warm-up file's bytes
                class Raw(TFRequest):
                    def to_string(self):
                        return base64.b64decode(op["data"])
                req = Raw()
            else:
                req = request_of(op)
            resp = client.predict(req)
        except PredictException as e:
            return {"error_code": e.code, "error": e.message.decode() if isinstance(e.message, bytes) else str(e.message)}
        finally:
            client.destroy()
        return {"outputs": {k: array_json(v) for k, v in resp.response.outputs.items()},
                "shapes": {k: resp.get_tensor_shape(k) for k in resp.response.outputs},
                "values": {k: (list(resp.get_values(k)) if resp.response.outputs[k].dtype != pb.DT_STRING
                               else [base64.b64encode(v).decode() for v in resp.get_values(k)])
                           for k in resp.response.outputs}}
    raise ValueError(kind)

with open(sys.argv[1]) as f:
    ops = json.load(f)
print(json.dumps([run(op) for op in ops]))
'''


def run_client_ops(ops, timeout=180):
    """Runs operations with the official client (see ``_OPS_SCRIPT``); returns their results.

    Operations: ``{"op": "encode", "signature_name", "feeds": [[name, shape, dtype code,
    flat values]], "fetches"}`` -> base64 request bytes; ``{"op": "parse_request" |
    "parse_response", "data": base64}`` -> the message as JSON; ``{"op": "predict",
    "endpoint": "host:port", "service", ...request fields or "data"}`` -> the response (or
    ``error_code``/``error``) through ``PredictClient``.
    """
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(ops, f)
    try:
        return run_client_script(_OPS_SCRIPT, f.name, timeout=timeout)
    finally:
        os.remove(f.name)
