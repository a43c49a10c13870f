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
"""

import inspect

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


def _load_pyfunc(path, model_config=None):
    """Called by ``mlflow.pyfunc.load_model``; ``path`` is the flavor's SavedModel folder."""
    from mlflow_eas_savedmodel.load import load_handle

    model_config = model_config or {}
    handle = load_handle(
        path,
        device=model_config.get("device"),
        verify_integrity=model_config.get("verify_integrity"),
    )
    return _EasSavedModelWrapper(
        handle, model_config.get(SIGNATURE_NAME_PARAM), model_config.get(OUTPUT_PARAM)
    )
