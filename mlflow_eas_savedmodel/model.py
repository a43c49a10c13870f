"""The loaded model: one TF1 session on the chosen device, one callable per SignatureDef.

Load once, resolve once: every SignatureDef gets a C++ session callable at load, with its feed
and fetch lists fixed (a :class:`SignatureRunner`), so ``predict`` only checks and casts the
inputs and calls it: no Keras ``predict``, no tracing, no graph building per call (the graph is
finalized). Session callables are thread-safe, so one handle serves many threads. The checks
before a load are in :mod:`.load`.
"""

import functools
import logging
import os
import re

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from mlflow_eas_savedmodel._tensorflow import import_tensorflow, quiet_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.serving_graph import SERVING_TAG
from mlflow_eas_savedmodel.metadata import numpy_dtype

_logger = logging.getLogger(__name__)

DEVICE_ENV = "MLFLOW_DEFAULT_PREDICTION_DEVICE"
_DEVICE_RE = re.compile(r"^/?(?:device:)?(cpu|gpu|cuda)(?::(\d+))?$", re.IGNORECASE)
_NO_ELEMENT = object()
_ACCEPTED_KINDS = {"f": "fiub", "i": "iub", "u": "iub", "b": "b", "c": "fiubc"}
# Lines of a TensorFlow error message that only point at Python stacks or repeat the node.
_NOISE = ("Graph execution error:", "Detected at node", "[[", "Original stack trace")
_MAX_ERROR_CHARS = 600


def tensorflow_error_text(error):
    """``"<ErrorType>: <what TensorFlow said>"`` in one line, without its stack traces."""
    text = getattr(error, "message", None) or str(error)
    text = text.split("Original stack trace")[0].split("\n\nThe above exception")[0]
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith(_NOISE)]
    joined = "; ".join(kept) or type(error).__name__
    if len(joined) > _MAX_ERROR_CHARS:
        joined = joined[:_MAX_ERROR_CHARS] + "..."
    return f"{type(error).__name__}: {joined}"


def resolve_device(device=None):
    """A TensorFlow device string for ``device``.

    ``None`` means ``$MLFLOW_DEFAULT_PREDICTION_DEVICE`` if set, else the first GPU if one is
    visible, else the CPU (the order MLflow's pytorch flavor uses). Accepted spellings: ``"cpu"``,
    ``"gpu"``, ``"gpu:1"``, ``"cuda:1"``, ``"/GPU:1"``, ``"/device:CPU:0"``.
    """
    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if device is None:
        device = os.environ.get(DEVICE_ENV) or ("gpu" if gpus else "cpu")
    match = _DEVICE_RE.match(str(device).strip())
    if not match:
        raise invalid_parameter_value(
            f"Unknown device {device!r}. Use 'cpu', 'gpu', 'gpu:1' or a TensorFlow device "
            "string such as '/GPU:1' or '/device:CPU:0'."
        )
    kind = "CPU" if match.group(1).lower() == "cpu" else "GPU"
    index = int(match.group(2) or 0)
    if kind == "GPU" and index >= len(gpus):
        raise invalid_parameter_value(
            f"Device {device!r} asks for GPU {index}, but this machine has {len(gpus)} visible "
            "GPU(s). Load with device='cpu', or install the GPU build: "
            "`pip install 'mlflow-eas-savedmodel[gpu]'`."
        )
    return f"/device:{kind}:{index}"


def _session_config(device):
    tf = import_tensorflow()
    kind, index = device.split(":")[1], int(device.split(":")[2])
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    if kind == "CPU":
        # A CPU handle must not grab GPU memory; extra CPU devices make '/CPU:1' placeable.
        config.device_count["GPU"] = 0
        config.device_count["CPU"] = index + 1
    else:
        config.gpu_options.allow_growth = True
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                # The GPU runtime was initialised already (by another model or user code):
                # growth can no longer change for eager use; the session's allow_growth above
                # still keeps this model from taking all GPU memory.
                pass
    return config


def _make_session_callable(session, feed_names, fetch_names):
    """A ``Session::MakeCallable`` handle: feeds and fetches resolved once, in C++.

    ``Session.make_callable(fetches, feed_list=...)`` only wraps ``Session.run`` (it rebuilds a
    feed dict and looks the executor up on every call, ~150 us at batch 1);
    ``_make_callable_from_options`` is the C++ callable behind TF's own predictors (~20 us).
    ``inter_op_thread_pool = -1`` runs the graph's ops in the calling thread instead of handing
    each one to the inter-op pool: it saves the thread switches that dominate small graphs, ops
    still use the intra-op pool for their own parallelism, and concurrent requests still run in
    parallel (each in its own thread); only independent branches of one graph run one after another.
    """
    import_tensorflow()
    from tensorflow.core.protobuf.config_pb2 import CallableOptions

    options = CallableOptions(feed=feed_names, fetch=fetch_names)
    options.run_options.inter_op_thread_pool = -1
    return session._make_callable_from_options(options)


class SignatureRunner:
    """One SignatureDef: its inputs' checks and a fixed session callable.

    Calling it with ``{input key: array-like}`` returns ``{output key: numpy.ndarray}``.

    Attributes:
        name: the SignatureDef's name.
        description: its metadata (method, inputs and outputs), as in the MLmodel file.
        input_keys: its input keys, in the order of ``description``.
        output_keys: its output keys.
    """

    def __init__(self, session, name, description):
        self.name = name
        self.description = description
        self.input_keys = list(description["inputs"])
        self.output_keys = list(description["outputs"])
        self._inputs = [
            (k, t["dtype"], numpy_dtype(t["dtype"]), t["shape"])
            for k, t in description["inputs"].items()
        ]
        self._call = _make_session_callable(
            session,
            [t["name"] for t in description["inputs"].values()],
            [t["name"] for t in description["outputs"].values()],
        )
        errors = import_tensorflow().errors
        # What the graph raises for values no static check can see (e.g. unequal batch sizes).
        self._input_errors = (errors.InvalidArgumentError, errors.OutOfRangeError)
        self._graph_errors = (errors.OpError,)

    def __call__(self, inputs):
        missing = [k for k in self.input_keys if k not in inputs]
        unknown = [k for k in inputs if k not in self.description["inputs"]]
        if missing or unknown:
            raise invalid_parameter_value(
                f"Signature {self.name!r} takes inputs {self.input_keys}; got {sorted(inputs, key=str)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {unknown})" if unknown else "")
                + ". Pass a dict with exactly these keys, or pick another signature with "
                "signature_name=..."
            )
        feeds = [self._coerce(inputs[k], k, tf_dtype, dtype, shape) for k, tf_dtype, dtype, shape in self._inputs]
        try:
            results = self._call(*feeds)
        except self._input_errors as e:
            raise invalid_parameter_value(
                f"Signature {self.name!r} rejected the inputs: {e.message}. Check that the inputs "
                "agree with each other (e.g. the same batch size)."
            ) from None
        except self._graph_errors as e:
            # Not the caller's inputs: the graph itself failed (a damaged or hostile model).
            raise MlflowException(
                f"Signature {self.name!r} failed in TensorFlow: {tensorflow_error_text(e)}. The "
                "model cannot compute this request; check it with `mlflow-eas-savedmodel "
                "check-runtime`, or re-log it.",
                error_code=INTERNAL_ERROR,
            ) from None
        return dict(zip(self.output_keys, results))

    def _coerce(self, value, key, tf_dtype, dtype, shape):
        try:
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
        except (ValueError, TypeError, OverflowError) as e:
            raise invalid_parameter_value(
                f"Input {key!r} of signature {self.name!r} is not an array ({e}). Pass a numpy "
                "array, or nested lists with the same length at every level."
            ) from None
        if array.dtype != dtype and array.size == 0:
            array = np.empty(array.shape, dtype)  # no values to check: JSON's [] is float64
        if array.dtype != dtype:
            if dtype.kind == "O":
                if array.dtype.kind not in "OSU":
                    raise self._dtype_error(key, tf_dtype, array)
            elif array.dtype.kind not in _ACCEPTED_KINDS.get(dtype.kind, dtype.kind):
                raise self._dtype_error(key, tf_dtype, array)
            else:
                self._check_integer_range(array, key, tf_dtype, dtype)
                array = array.astype(dtype)
        if array.dtype.kind == "O":
            # TensorFlow fails on anything but str/bytes elements with an InternalError.
            bad = next((v for v in array.flat if not isinstance(v, (str, bytes))), _NO_ELEMENT)
            if bad is not _NO_ELEMENT:
                raise invalid_parameter_value(
                    f"Input {key!r} of signature {self.name!r} holds a {type(bad).__name__} "
                    f"element ({bad!r:.40}); a {tf_dtype} input takes str or bytes elements only."
                )
        if shape is not None and (
            array.ndim != len(shape) or any(d not in (-1, a) for d, a in zip(shape, array.shape))
        ):
            expected = tuple(None if d == -1 else d for d in shape)
            raise invalid_parameter_value(
                f"Input {key!r} of signature {self.name!r} has shape {array.shape}, but the "
                f"signature expects {expected} (None: any size). Reshape the input."
            )
        return array

    def _check_integer_range(self, array, key, tf_dtype, dtype):
        # astype would wrap out-of-range integers silently: 2**32 fed to int32 becomes 0.
        if dtype.kind not in "iu" or np.can_cast(array.dtype, dtype) or not array.size:
            return
        info = np.iinfo(dtype)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise invalid_parameter_value(
                f"Input {key!r} of signature {self.name!r} has values in [{low}, {high}], outside "
                f"the range of {tf_dtype} [{info.min}, {info.max}]. Pass values that fit."
            )

    def _dtype_error(self, key, tf_dtype, array):
        return invalid_parameter_value(
            f"Input {key!r} of signature {self.name!r} has dtype {array.dtype}, but the "
            f"signature expects {tf_dtype}. Pass {tf_dtype} values "
            f"(e.g. np.asarray(x, dtype={numpy_dtype(tf_dtype).name!r}))."
        )


class EasSavedModel:
    """A SavedModel loaded for prediction, as returned by :func:`mlflow_eas_savedmodel.load_model`.

    Attributes:
        signatures: every SignatureDef's metadata by name (method, inputs and outputs with tensor
            names, dtypes and shapes), as recorded in the MLmodel file.
        default_signature: the SignatureDef used when a call names none.
        device: the TensorFlow device the graph was placed on.
        session: the ``tf.compat.v1.Session`` holding the graph (the raw model).
    """

    def __init__(self, saved_model_dir, signatures, default_signature, device=None, custom_objects=None):
        """Loads ``saved_model_dir`` (checked by :func:`.load.load_handle` before).

        ``custom_objects`` is ``None`` or a callable returning them, called the first time
        :attr:`custom_objects` is read.
        """
        tf = import_tensorflow()
        self._custom_objects = custom_objects
        self.device = resolve_device(device)
        self.signatures = signatures
        self.default_signature = default_signature
        graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=graph, config=_session_config(self.device))
        try:
            # quiet: the TF1 loader EAS's runtimes share logs a deprecation notice on TF 2.x.
            with graph.as_default(), graph.device(self.device), quiet_tensorflow():
                tf.compat.v1.saved_model.loader.load(self.session, [SERVING_TAG], saved_model_dir)
            graph.finalize()  # nothing may add ops per call: a growing graph is a memory leak
            self._runners = {
                name: SignatureRunner(self.session, name, description)
                for name, description in signatures.items()
            }
        except (tf.errors.OpError, RuntimeError, ValueError, KeyError, TypeError, OSError) as e:
            # The pre-load check passed, so what fails here is TensorFlow reading damaged files
            # (variables cut short with the hash check off, a SignatureDef naming no tensor...).
            self.session.close()
            raise invalid_parameter_value(
                f"TensorFlow cannot load the SavedModel at {saved_model_dir!r}: "
                f"{tensorflow_error_text(e)}. Its files are damaged or do not belong together: "
                "download or copy the model again (load it with verify_integrity on to find a "
                "changed file), or re-log it."
            ) from None
        _logger.debug("Loaded %s on %s", saved_model_dir, self.device)

    def predict(self, inputs, signature_name=None):
        """Runs one SignatureDef.

        Args:
            inputs: ``{input key: array-like}``; a bare array for a one-input SignatureDef.
            signature_name: the SignatureDef to run (default: :attr:`default_signature`).

        Returns:
            ``{output key: numpy.ndarray}``.

        Example:
            >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
            >>> image = keras.Input((4,), name="image")
            >>> mes.save_model(keras.Model(image, keras.layers.Dense(3, name="scores")(image)), "model")
            >>> handle = mes.load_model("model", device="cpu")
            >>> handle.predict({"image": np.ones((2, 4), "float32")}, signature_name="serving_default")["scores"].shape
            (2, 3)
        """
        runner = self.signature_runner(signature_name)
        if not isinstance(inputs, dict):
            if len(runner.input_keys) != 1:
                raise invalid_parameter_value(
                    f"Signature {runner.name!r} takes several inputs {runner.input_keys}; pass a "
                    "dict {key: array} instead of a single array."
                )
            inputs = {runner.input_keys[0]: inputs}
        return runner(inputs)

    def signature_runner(self, signature_name=None):
        """The :class:`SignatureRunner` of ``signature_name`` (default: :attr:`default_signature`).

        Raises:
            MlflowException: the model has no SignatureDef of that name.

        Example:
            >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
            >>> image = keras.Input((4,), name="image")
            >>> mes.save_model(keras.Model(image, keras.layers.Dense(3, name="scores")(image)), "model")
            >>> runner = mes.load_model("model", device="cpu").signature_runner()
            >>> runner.name, runner.input_keys, runner.output_keys
            ('serving_default', ['image'], ['scores'])
        """
        name = signature_name
        if name is None or (isinstance(name, str) and not name):
            name = self.default_signature
        if not isinstance(name, str) or name not in self._runners:
            raise invalid_parameter_value(
                f"Unknown signature_name {name!r:.100}. This model has: {sorted(self._runners)}."
            )
        return self._runners[name]

    @functools.cached_property
    def custom_objects(self):
        """The Keras custom objects saved with the model (``None`` without), unpickled on first
        read after their SHA-256 is checked again (see :mod:`.load`)."""
        return self._custom_objects() if self._custom_objects is not None else None

    def close(self):
        """Closes the session; the handle cannot predict afterwards.

        Example:
            >>> import keras, mlflow_eas_savedmodel as mes
            >>> image = keras.Input((4,), name="image")
            >>> mes.save_model(keras.Model(image, keras.layers.Dense(3, name="scores")(image)), "model")
            >>> mes.load_model("model", device="cpu").close()
        """
        self.session.close()
