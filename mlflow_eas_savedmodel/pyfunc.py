"""The ``python_function`` flavor: ``_load_pyfunc`` and the input/output conversion.

``_load_pyfunc`` loads through :func:`.load.load_handle` and predicts through the handle's
:meth:`~.model.EasSavedModel.signature_runner`; it never asks for the custom objects.

``predict(data, params)`` accepts:

* a numpy array (or a list of lists) for a SignatureDef with one input;
* a dict ``{input key: array-like}``;
* a pandas DataFrame: columns named after the input keys (cells may hold lists/arrays, one row
  per example), or, for a one-input SignatureDef, any numeric columns, taken in column order as
  the rows of that input (what ``text/csv`` requests and ``mlflow models predict --content-type
  csv`` become). For such a *tabular* input (shape ``(-1, n)`` or ``(-1,)``) the MLflow signature
  has no input schema, so MLflow passes these forms through unchanged (see
  :func:`.metadata.mlflow_signature`); every input is checked against its SignatureDef here and
  in :class:`.model.SignatureRunner`, with one-line errors.

``params={"signature_name": ...}`` picks the SignatureDef per call; without it (or with
``None``/``""``) predict uses ``model_config["signature_name"]``, which
``mlflow.pyfunc.load_model(uri, model_config=...)`` and ``$MLFLOW_PYFUNC_INFERENCE_CONFIG`` set;
left at ``None`` (what ``save_model`` writes) it means the model's default SignatureDef, which
only the flavor's ``default_signature`` records. Models saved before wrote that same name into
``model_config`` and load the same. The MLflow signature declares the param with default
``None`` for the same reason: MLflow fills declared defaults into every call, so a non-empty
default would always beat ``model_config``.

It returns a numpy array when the SignatureDef has one output, else ``{output key: array}``.
With ``output="labels"`` (``model_config`` or ``params``) a one-output classifier returns the
class indices instead (argmax of the last axis; ``score >= 0.5`` for one sigmoid unit), the
layout ``mlflow.models.evaluate(model_type="classifier")`` compares with the targets; with
``output="values"`` a one-output regressor's ``(batch, 1)`` predictions come back as ``(batch,)``,
what ``mlflow.models.evaluate(model_type="regressor")`` takes.

Loads through ``mlflow.pyfunc`` share a process-level cache of loaded handles
(:class:`_HandleCache`): ``spark_udf`` on a local master loads the model for every task, and a
cache hit costs one ``lstat`` per file of the model folder instead of hashing, checking and
restoring it again. In a Spark task the first load also freezes the worker's heap for Python's
cyclic collector (:func:`_freeze_heap_in_spark_task`).
"""

import gc
import inspect
import os
import sys
import threading
import time
from collections import OrderedDict

import numpy as np
import pandas as pd

from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.metadata import (
    OUTPUT_CHOICES,
    OUTPUT_LABELS,
    OUTPUT_PARAM,
    OUTPUT_VALUES,
    SIGNATURE_NAME_PARAM,
)

LOAD_CACHE_ENV = "MLFLOW_EAS_SAVEDMODEL_LOAD_CACHE"
SPARK_GC_FREEZE_ENV = "MLFLOW_EAS_SAVEDMODEL_SPARK_GC_FREEZE"
_DEFAULT_CACHED_HANDLES = 2
_MAX_LISTED_COLUMNS = 8


def dataframe_to_inputs(df, input_keys, description=None):
    """A pandas DataFrame -> ``{key: array}`` for a SignatureDef with ``input_keys``.

    ``description`` (the SignatureDef's metadata) lets a wrong DataFrame fail naming the input's
    shape and what the DataFrame holds.
    """
    if set(input_keys) <= set(df.columns):
        return {k: _column_to_array(df[k], k) for k in input_keys}
    if len(input_keys) == 1:
        key = input_keys[0]
        if len(df.columns) == 1:
            return {key: _column_to_array(df[df.columns[0]], key)}
        return {key: _rows_of_columns(df, key, description)}
    raise invalid_parameter_value(
        f"The DataFrame has columns {_columns(df)} but the signature takes inputs "
        f"{list(input_keys)}. Name the columns after the inputs."
    )


def _columns(df):
    names = [str(c) for c in df.columns[:_MAX_LISTED_COLUMNS]]
    more = f" and {len(df.columns) - _MAX_LISTED_COLUMNS} more" if len(df.columns) > _MAX_LISTED_COLUMNS else ""
    return f"{names}{more}"


def _rows_of_columns(df, key, description):
    """A DataFrame of numeric columns, in column order, as the rows of the one input ``key``."""
    tensor = (description or {}).get("inputs", {}).get(key, {})
    shape = tensor.get("shape")
    expected = f"{key!r} of shape {tuple(None if d == -1 else d for d in shape)}" if shape else repr(key)
    non_numeric = [str(c) for c, dtype in df.dtypes.items() if dtype.kind not in "fiub"]
    if non_numeric:
        raise invalid_parameter_value(
            f"The model takes one input {expected}; the DataFrame's columns {_columns(df)} are "
            f"taken as its values in column order, but {non_numeric[:_MAX_LISTED_COLUMNS]} are "
            "not numeric. Pass numeric columns only, or one column named "
            f"{key!r} holding each row's values."
        )
    if shape is not None and (len(shape) != 2 or shape[1] not in (-1, len(df.columns))):
        width = "one value" if len(shape) == 1 else (
            f"{shape[1]} values" if len(shape) == 2 else f"values of shape {tuple(shape[1:])}"
        )
        raise invalid_parameter_value(
            f"The model takes one input {expected}, {width} per row, but the DataFrame has "
            f"{len(df.columns)} columns {_columns(df)}. Pass "
            + (f"{shape[1]} numeric columns in the model's order, or " if len(shape) == 2 else "")
            + f"one column named {key!r} holding each row's values."
        )
    return df.to_numpy()


def _column_to_array(series, key):
    values = series.to_list()
    if values and isinstance(values[0], (list, tuple, np.ndarray)):
        try:
            return np.stack([np.asarray(v) for v in values])
        except ValueError as e:
            raise invalid_parameter_value(
                f"Column {key!r} holds arrays of different shapes ({e}). Every row of an input "
                "must have the same shape."
            ) from e
    return series.to_numpy()


class _EasSavedModelWrapper:
    """What ``mlflow.pyfunc.load_model`` wraps: converts inputs and calls the loaded handle."""

    def __init__(self, handle, signature_name=None, output=None):
        self.handle = handle
        self.signature_name = signature_name or handle.default_signature
        handle.signature_runner(self.signature_name)  # an unknown configured name fails at load
        self.output = _check_output(output, "model_config")

    def get_raw_model(self):
        """The :class:`~mlflow_eas_savedmodel.model.EasSavedModel` handle."""
        return self.handle

    def predict(self, data, params=None):
        params = params or {}
        name = params.get(SIGNATURE_NAME_PARAM) or self.signature_name
        runner = self.handle.signature_runner(name)
        inputs = self._to_inputs(data, runner)
        outputs = runner(inputs)
        output = params.get(OUTPUT_PARAM)
        output = _check_output(output, "params") if output else self.output
        if output == OUTPUT_LABELS:
            return _labels(runner, outputs)
        if output == OUTPUT_VALUES:
            return _values(runner, outputs)
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs

    # MLflow's PyFuncModel.predict calls inspect.signature(predict) on every request to see
    # whether it takes params; a precomputed __signature__ turns that from ~23 us into ~8 us.
    predict.__signature__ = inspect.signature(predict)

    @staticmethod
    def _to_inputs(data, runner):
        input_keys = runner.input_keys
        if isinstance(data, dict):
            return data
        if isinstance(data, pd.DataFrame):
            return dataframe_to_inputs(data, input_keys, runner.description)
        if isinstance(data, (np.ndarray, list, tuple)) or np.isscalar(data):
            if len(input_keys) != 1:
                raise invalid_parameter_value(
                    f"This signature takes several inputs {list(input_keys)}; pass a dict "
                    "{key: array} or a DataFrame with those columns."
                )
            return {input_keys[0]: data}
        raise invalid_parameter_value(
            f"Cannot predict on {type(data).__name__}. Pass a numpy array, a dict of arrays "
            "or a pandas DataFrame."
        )


def _check_output(output, where):
    if output in (None, "", *OUTPUT_CHOICES):
        return output or None
    raise invalid_parameter_value(
        f"Unknown {OUTPUT_PARAM}={output!r:.60} in {where}. Use {OUTPUT_PARAM}={OUTPUT_LABELS!r} "
        f"for class indices, {OUTPUT_PARAM}={OUTPUT_VALUES!r} for one value per example (a "
        "regressor's (batch, 1) output as (batch,)), or leave it out for the model's outputs."
    )


def _values(runner, outputs):
    """A regressor's one output of shape ``(batch, 1)`` (or ``(batch,)``) as ``(batch,)``."""
    if len(outputs) != 1:
        raise invalid_parameter_value(
            f"{OUTPUT_PARAM}={OUTPUT_VALUES!r} needs a SignatureDef with one output; "
            f"{runner.name!r} has {runner.output_keys}. Pick one with signature_name=..."
        )
    (key, values), = outputs.items()
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    if values.ndim == 1:
        return values
    raise invalid_parameter_value(
        f"{OUTPUT_PARAM}={OUTPUT_VALUES!r} needs one value per example, an output of shape "
        f"(batch, 1) or (batch,); output {key!r} of {runner.name!r} is "
        f"{values.dtype}{list(values.shape)}. For class scores use {OUTPUT_PARAM}={OUTPUT_LABELS!r}."
    )


def _labels(runner, outputs):
    """Class indices from a classifier's one output: argmax, or ``>= 0.5`` for one unit."""
    if len(outputs) != 1:
        raise invalid_parameter_value(
            f"{OUTPUT_PARAM}={OUTPUT_LABELS!r} needs a SignatureDef with one output; "
            f"{runner.name!r} has {runner.output_keys}. Pick one with signature_name=..."
        )
    (key, scores), = outputs.items()
    if scores.ndim != 2 or scores.dtype.kind not in "fc":
        raise invalid_parameter_value(
            f"{OUTPUT_PARAM}={OUTPUT_LABELS!r} needs class scores of shape (batch, classes); "
            f"output {key!r} of {runner.name!r} is {scores.dtype}{list(scores.shape)}."
        )
    if scores.shape[1] == 1:
        return (scores[:, 0] >= 0.5).astype(np.int64)
    return np.argmax(scores, axis=1)


class _HandleCache:
    """Loaded handles of this process, each kept with the content facts of its model folder.

    ``spark_udf`` on a local master calls ``mlflow.pyfunc.load_model`` for every task (each
    partition), and each load of a 128 MB model costs ~0.25 s (hashes, ops policy, restore).
    A handle is reused when every entry of the model folder (``lstat``: mode, size, inode, mtime,
    ctime, the same entries) is what it was when the handle was loaded and every check passed:
    then every check would pass again, on the same bytes. Any change, added file or symlink
    makes a full load. Only folders whose entries had settled before the load began are kept
    (:func:`.integrity.settled`), and at most ``$MLFLOW_EAS_SAVEDMODEL_LOAD_CACHE`` handles
    (default 2; ``0`` turns the cache off), the least recently used dropped first. A handle whose
    session was closed (``get_raw_model().close()``) is loaded again.
    """

    def __init__(self):
        self._entries = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def capacity():
        value = os.environ.get(LOAD_CACHE_ENV, "").strip()
        try:
            return max(int(value), 0) if value else _DEFAULT_CACHED_HANDLES
        except ValueError:
            raise invalid_parameter_value(
                f"{LOAD_CACHE_ENV}={value!r:.40} is not a number. Set it to how many loaded "
                "models each process keeps for reuse (0 turns the cache off), or unset it."
            ) from None

    def load(self, saved_model_dir, load, **options):
        capacity = self.capacity()
        if not capacity:
            return load()
        model_dir = os.path.dirname(os.path.abspath(saved_model_dir))
        key = (os.path.abspath(saved_model_dir), tuple(sorted(options.items(), key=str)))
        started = time.time_ns()
        facts, all_settled = _folder_facts(model_dir, started)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == facts and not entry[1].session._closed:
                self._entries.move_to_end(key)
                return entry[1]
        handle = load()
        if all_settled and _folder_facts(model_dir, started)[0] == facts:
            with self._lock:
                self._entries[key] = (facts, handle)
                self._entries.move_to_end(key)
                while len(self._entries) > capacity:
                    self._entries.popitem(last=False)
        return handle

    def clear(self):
        with self._lock:
            self._entries.clear()


def _folder_facts(root, since_ns):
    """``lstat`` facts of every entry under ``root`` (and itself), and whether all had settled."""
    from mlflow_eas_savedmodel.integrity import content_facts, settled

    facts, all_settled = [], True
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in (".", *sorted(dirs), *sorted(names)):
            stat = os.lstat(os.path.join(folder, name))
            facts.append((os.path.relpath(os.path.join(folder, name), root), stat.st_mode,
                          *content_facts(stat)))
            all_settled = all_settled and settled(stat, since_ns)
    return tuple(facts), all_settled


_handles = _HandleCache()
_heap_frozen = False


def _freeze_heap_in_spark_task():
    """In a Spark Python worker, once: ``gc.collect()``, then ``gc.freeze()`` what is alive.

    ``spark_udf`` turns every ``array<...>`` prediction into one Python list per row (MLflow's
    ``result.to_numpy().tolist()``). Those lists live until Arrow has sent the batch, so they
    reach the oldest generation, and Python's cyclic collector then keeps walking the ~0.5 M
    objects TensorFlow, Keras and MLflow allocated at import: ~1 s per 50 batches of 10k rows,
    5x the model's own time for an MLP (``bench/``). Frozen objects are left out of every later
    collection. In a worker process that exists to run UDF tasks, they are its imports, the
    loaded model and this task's state; garbage is collected before the freeze, so only cycles
    those objects form later are never freed. Outside a Spark task this does nothing;
    ``$MLFLOW_EAS_SAVEDMODEL_SPARK_GC_FREEZE=0`` turns it off.
    """
    global _heap_frozen
    if _heap_frozen or "pyspark" not in sys.modules:
        return
    if os.environ.get(SPARK_GC_FREEZE_ENV, "").strip() == "0":
        return
    from pyspark import TaskContext

    if TaskContext.get() is None:
        return
    gc.collect()
    gc.freeze()
    _heap_frozen = True


def _load_pyfunc(path, model_config=None):
    """Called by ``mlflow.pyfunc.load_model``; ``path`` is the flavor's SavedModel folder."""
    from mlflow_eas_savedmodel.integrity import should_verify
    from mlflow_eas_savedmodel.load import load_handle
    from mlflow_eas_savedmodel.model import DEVICE_ENV

    model_config = model_config or {}
    device = model_config.get("device")
    verify_integrity = model_config.get("verify_integrity")
    handle = _handles.load(
        path,
        lambda: load_handle(path, device=device, verify_integrity=verify_integrity),
        device=device if device is not None else ("env", os.environ.get(DEVICE_ENV)),
        verified=should_verify(verify_integrity),
    )
    _freeze_heap_in_spark_task()
    return _EasSavedModelWrapper(
        handle, model_config.get(SIGNATURE_NAME_PARAM), model_config.get(OUTPUT_PARAM)
    )
