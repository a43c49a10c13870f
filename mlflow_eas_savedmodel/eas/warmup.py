"""Warm-up files for EAS and for TensorFlow Serving, from the same requests.

EAS: ``warm_up_data_path`` points at a ``.bin`` file holding one serialized
``PredictRequest``, written exactly as the official client's ``TFRequest.to_string()``
writes it (EAS's documented recipe writes that one request to the file; EAS replays it,
``warm_up_count_per_file`` times). We write one file per SignatureDef,
``warm_up_<signature>.bin``, so each signature in use can be warmed up; a service config
takes one of them (usually the default signature's).

TensorFlow Serving: ``assets.extra/tf_serving_warmup_requests`` inside the SavedModel folder,
a TFRecord file of ``PredictionLog`` records (at most 1000), one ``PredictLog`` per
SignatureDef with the same inputs. It is written under ``OUT_DIR/assets.extra/``: copy that
folder into the SavedModel folder TF Serving loads (e.g. the one ``export`` wrote).

Inputs: given inputs, else the saved input example, else synthesised from the recorded
dtypes and shapes (see :mod:`.inputs`). ``output_filter`` stays empty (all outputs): EAS's
docs ask warm-up requests to match production requests exactly, and a filter would change
the fetched tensors.

Layout: one request per SignatureDef is resolved once (``_warmup_requests``), then written by
``_write_eas_requests`` (the ``.bin`` files) and ``_write_tf_serving_requests`` (the TFRecord);
:func:`write_eas_warmup_files` runs the first writer only (``run-local`` and ``create`` need no
TensorFlow Serving API), :func:`write_warmup_files` both.

TF Serving's writer needs ``tensorflow-serving-api`` (install with
``pip install --no-deps tensorflow-serving-api``: it depends on the full ``tensorflow`` wheel,
while TensorFlow here is ``tensorflow-cpu``).
"""

import dataclasses
import os

from mlflow_eas_savedmodel.eas import protocol
from mlflow_eas_savedmodel.eas.mlmodel import download_model
from mlflow_eas_savedmodel.eas.inputs import resolve_inputs
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.layout import ASSETS_EXTRA_DIR

TF_SERVING_WARMUP_FILE = os.path.join(ASSETS_EXTRA_DIR, "tf_serving_warmup_requests")
TF_SERVING_MAX_RECORDS = 1000


def eas_warmup_file_name(signature_name):
    return f"warm_up_{signature_name}.bin"


def _serving_apis():
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError as e:
        raise invalid_parameter_value(
            "Writing TF Serving warm-up files needs tensorflow-serving-api: "
            "`pip install --no-deps tensorflow-serving-api` (--no-deps: it requires the full "
            "tensorflow wheel, which would replace tensorflow-cpu)."
        ) from e
    return model_pb2, predict_pb2, prediction_log_pb2


@dataclasses.dataclass(frozen=True)
class _WarmupRequests:
    """The inputs of one warm-up request per chosen SignatureDef, what both writers write.

    Attributes:
        signature_defs: ``{signature: SignatureDef metadata}`` of the chosen signatures, in order.
        feeds: ``{signature: {key: array}}``.
        origins: ``{signature: "input example" | "given inputs" | "synthesised"}``.
    """

    signature_defs: dict
    feeds: dict
    origins: dict


def _warmup_requests(model_uri, signatures=None, inputs=None):
    """The ``_WarmupRequests`` of ``model_uri`` (TensorFlow only for ``tf.Example`` inputs).

    Args and inputs as :func:`write_warmup_files`.
    """
    local, mlmodel, conf = download_model(model_uri)
    signature_defs = conf.signature_defs
    chosen = list(signatures) if signatures else list(signature_defs)
    unknown = [s for s in chosen if s not in signature_defs]
    if unknown:
        raise invalid_parameter_value(
            f"Unknown signature(s) {unknown}. This model has: {sorted(signature_defs)}."
        )
    selected = {name: signature_defs[name] for name in chosen}
    specs = None
    if any(t["dtype"] == "string" for s in selected.values() for t in s["inputs"].values()):
        # tf.Example inputs get valid serialized examples (random strings would fail the
        # warm-up); reading the parse ops' specs needs the graph, and so TensorFlow.
        from mlflow_eas_savedmodel.eas.runtime_check import example_specs

        specs = example_specs(conf.saved_model_path(local))
    feeds, origins = resolve_inputs(selected, mlmodel, local, inputs=inputs, example_specs=specs)
    return _WarmupRequests(signature_defs=selected, feeds=feeds, origins=origins)


def _write_eas_requests(requests, out_dir):
    """Writes one EAS ``warm_up_<signature>.bin`` per request (no TensorFlow needed).

    Returns:
        ``{signature: .bin path}``.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    eas_files = {}
    for name, signature_def in requests.signature_defs.items():
        dtypes = {k: t["dtype"] for k, t in signature_def["inputs"].items()}
        body = protocol.encode_request(requests.feeds[name], signature_name=name, dtypes=dtypes)
        path = os.path.join(out_dir, eas_warmup_file_name(name))
        with open(path, "wb") as f:
            f.write(body)
        eas_files[name] = path
    return eas_files


def _write_tf_serving_requests(requests, out_dir, model_name="model"):
    """Writes TF Serving's ``assets.extra/tf_serving_warmup_requests`` TFRecord under ``out_dir``.

    Returns:
        The TFRecord's path.
    """
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    if len(requests.signature_defs) > TF_SERVING_MAX_RECORDS:
        raise invalid_parameter_value(
            f"TF Serving reads at most {TF_SERVING_MAX_RECORDS} warm-up records."
        )
    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, os.path.dirname(TF_SERVING_WARMUP_FILE)), exist_ok=True)

    tf = import_tensorflow()
    model_pb2, predict_pb2, prediction_log_pb2 = _serving_apis()
    tf_serving = os.path.join(out_dir, TF_SERVING_WARMUP_FILE)
    with tf.io.TFRecordWriter(tf_serving) as writer:
        for name, signature_def in requests.signature_defs.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name)
            )
            for key, value in requests.feeds[name].items():
                dtype = tf.as_dtype(signature_def["inputs"][key]["dtype"])
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return tf_serving


def write_eas_warmup_files(model_uri, out_dir, signatures=None, inputs=None):
    """Writes only the EAS ``.bin`` warm-up requests of ``model_uri`` (no TensorFlow needed).

    Args and inputs as :func:`write_warmup_files`.

    Returns:
        ``{signature: .bin path}``.
    """
    return _write_eas_requests(_warmup_requests(model_uri, signatures, inputs), out_dir)


def write_warmup_files(model_uri, out_dir, signatures=None, inputs=None, model_name="model"):
    """Writes EAS ``.bin`` warm-up requests and TF Serving's warm-up TFRecord for ``model_uri``.

    Args:
        model_uri: a model saved by this flavor.
        out_dir: the folder to write to (created if missing; existing files are replaced).
        signatures: the SignatureDefs to warm up (default: all).
        inputs: ``{key: array}`` (or one array) to use instead of the saved input example.
        model_name: ``model_spec.name`` of the TF Serving requests (TF Serving ignores it
            during warm-up, but it is recorded).

    Returns:
        ``{"eas": {signature: .bin path}, "tf_serving": TFRecord path, "inputs_from":
        {signature: "input example" | "given inputs" | "synthesised"}}``.

    Example:
        >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
        >>> image = keras.Input((4,), name="image")
        >>> keras_model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
        >>> mes.save_model(keras_model, "model", input_example=np.ones((2, 4), "float32"))
        >>> from mlflow_eas_savedmodel.eas.warmup import write_warmup_files
        >>> written = write_warmup_files("model", "warmup")
        >>> written["eas"]["serving_default"], written["inputs_from"]
        ('warmup/warm_up_serving_default.bin', {'serving_default': 'input example'})
    """
    requests = _warmup_requests(model_uri, signatures, inputs)
    eas_files = _write_eas_requests(requests, out_dir)
    tf_serving = _write_tf_serving_requests(requests, out_dir, model_name=model_name)
    return {"eas": eas_files, "tf_serving": tf_serving, "inputs_from": requests.origins}


def read_tf_serving_warmup(path):
    """``[(signature_name, {key: numpy array})]`` of a ``tf_serving_warmup_requests`` file."""
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    tf = import_tensorflow()
    _, _, prediction_log_pb2 = _serving_apis()
    requests = []
    for record in tf.compat.v1.io.tf_record_iterator(path):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        requests.append(
            (request.model_spec.signature_name, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        )
    return requests
