"""SignatureDefs <-> the flavor's MLmodel metadata, and the MLflow signature derived from them.

The metadata is plain data (no TensorFlow needed to read it): ``inspect`` and the serving
validation work from it alone. Shapes use ``-1`` for unknown dimensions and ``None`` for an
unknown rank; dtypes are TensorFlow's names (``float32``, ``string``...).
"""

import numpy as np

SIGNATURE_NAME_PARAM = "signature_name"
# "labels": the class index (argmax, or >= 0.5 for one sigmoid unit) instead of the scores, the
# prediction layout mlflow.models.evaluate(model_type="classifier") takes.
OUTPUT_PARAM = "output"
OUTPUT_LABELS = "labels"
# "values": a one-output regressor's (batch, 1) predictions as (batch,), one value per example,
# the layout mlflow.models.evaluate(model_type="regressor") takes.
OUTPUT_VALUES = "values"
OUTPUT_CHOICES = (OUTPUT_LABELS, OUTPUT_VALUES)
PREDICT_PARAMS = (SIGNATURE_NAME_PARAM, OUTPUT_PARAM)
# TensorFlow dtype name -> MLflow column type name (mlflow.types.DataType) for the output schema.
_COLUMN_TYPES = {
    "float32": "float", "float64": "double", "int32": "integer", "int64": "long",
    "bool": "boolean", "string": "binary",
}


def describe_signature_defs(meta_graph_def):
    """``{name: {"method_name", "inputs": {key: {name, dtype, shape}}, "outputs": {...}}}``."""
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    tf = import_tensorflow()

    def tensor(info):
        if info.tensor_shape.unknown_rank:
            shape = None
        else:
            shape = [d.size if d.size >= 0 else -1 for d in info.tensor_shape.dim]
        return {"name": info.name, "dtype": tf.as_dtype(info.dtype).name, "shape": shape}

    return {
        name: {
            "method_name": sig.method_name,
            "inputs": {k: tensor(v) for k, v in sorted(sig.inputs.items())},
            "outputs": {k: tensor(v) for k, v in sorted(sig.outputs.items())},
        }
        for name, sig in sorted(meta_graph_def.signature_def.items())
    }


def numpy_dtype(tf_dtype_name):
    """The numpy dtype predict accepts for a TensorFlow dtype name (strings -> object)."""
    if tf_dtype_name == "string":
        return np.dtype(object)
    if tf_dtype_name == "bfloat16":
        return np.dtype(np.float32)
    return np.dtype(tf_dtype_name)


def _schema(tensors):
    from mlflow.types.schema import Schema, TensorSpec

    specs = []
    for key, t in tensors.items():
        shape = t["shape"] if t["shape"] is not None else [-1]
        specs.append(TensorSpec(numpy_dtype(t["dtype"]), tuple(shape), name=key))
    return Schema(specs)


def is_tabular(inputs):
    """Whether ``inputs`` is one numeric input of shape ``(-1,)`` or ``(-1, n)``: rows of features.

    Such a SignatureDef takes what MLflow users pass a tabular model: a DataFrame of numeric
    columns (in column order), CSV, a list of lists, a 2-D array, as well as its named input.
    """
    if len(inputs) != 1:
        return False
    (t,) = inputs.values()
    shape = t["shape"]
    return (
        shape is not None and len(shape) in (1, 2) and shape[0] == -1
        and t["dtype"] != "string" and numpy_dtype(t["dtype"]).kind in "fiub"
    )


def _column_schema(tensors):
    """Outputs as MLflow columns: ``(-1,)`` -> a scalar column, ``(-1, k, ...)`` -> an array column.

    ``spark_udf`` infers its ``result_type`` from this: ``array<float>`` for ``(-1, k)`` scores,
    ``float`` for ``(-1,)``, a struct of those for several outputs. From a ``TensorSpec`` it infers
    ``array<array<float>>`` for ``(-1, k)`` (it reads the batch axis as part of each row), which
    fails on every row. ``None`` when an output has no batch axis or a dtype MLflow columns lack.
    """
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    specs = []
    for key, t in tensors.items():
        shape = t["shape"]
        if not shape or shape[0] != -1 or t["dtype"] not in _COLUMN_TYPES:
            return None
        column_type = DataType[_COLUMN_TYPES[t["dtype"]]]
        for _ in shape[1:]:
            column_type = Array(column_type)
        specs.append(ColSpec(column_type, name=key))
    return Schema(specs)


def mlflow_signature(signature_defs, default_signature):
    """The MLflow ``ModelSignature``: the schema every SignatureDef shares, and the predict params.

    MLflow has one input and one output schema per model, while a SavedModel may have several
    SignatureDefs. A schema is recorded only when it is true for every SignatureDef: the input
    schema when all take the same keys, dtypes and shapes (MLflow enforces it on every request,
    so the default's inputs would reject requests for the others), the output schema when all
    return the same. Otherwise that side is left out rather than shown wrong in the MLflow UI;
    every SignatureDef's schema is in the flavor's ``signature_defs`` (``mlflow-eas-savedmodel
    inspect`` prints them), and each request is checked against the SignatureDef it names (see
    :mod:`.model`).

    Two more cases leave a schema out or change its form, because of how MLflow applies it:

    * a tabular input (:func:`is_tabular`, e.g. ``features`` of shape ``(-1, 4)``) gets no input
      schema. MLflow enforces a ``TensorSpec`` schema before predict sees the data: it refuses a
      DataFrame whose columns are not named after the input (``Model is missing inputs``),
      ``text/csv`` requests (its CSV parser takes column schemas only) and lists, and its errors
      print the whole DataFrame; a column schema would refuse the named input instead. The
      flavor checks every request against the SignatureDef itself (dtype and shape, one-line
      errors), and the shape stays in the flavor's ``signature_defs``.
    * outputs are columns (:func:`_column_schema`) so that ``spark_udf`` infers its result type;
      a ``TensorSpec`` only for outputs MLflow's columns cannot express.

    The params default to ``None``, "not given": MLflow fills a param's default into every call,
    so a non-empty default would override ``model_config`` (see :mod:`.pyfunc`).
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    default = signature_defs[default_signature]
    visible = _strip_tensor_names(signature_defs)

    def shared(side):
        if any(s[side] != visible[default_signature][side] for s in visible.values()):
            return None
        if any(t["shape"] is None for t in default[side].values()):
            return None  # MLflow cannot express an unknown rank
        if not default[side]:
            return None  # a SignatureDef without inputs: MLflow has no empty schema
        return default[side]

    inputs, outputs = shared("inputs"), shared("outputs")
    params = ParamSchema([ParamSpec(name, "string", None) for name in PREDICT_PARAMS])
    return ModelSignature(
        inputs=None if inputs is None or is_tabular(inputs) else _schema(inputs),
        outputs=None if outputs is None else (_column_schema(outputs) or _schema(outputs)),
        params=params,
    )


def _strip_tensor_names(signature_defs):
    """SignatureDefs without graph tensor names, which clients never see."""
    return {
        name: {side: {k: {"dtype": t["dtype"], "shape": t["shape"]} for k, t in s[side].items()}
               for side in ("inputs", "outputs")}
        for name, s in signature_defs.items()
    }
