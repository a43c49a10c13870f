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
PREDICT_PARAMS = (SIGNATURE_NAME_PARAM, OUTPUT_PARAM)


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
        return _schema(default[side])

    params = ParamSchema([ParamSpec(name, "string", None) for name in PREDICT_PARAMS])
    return ModelSignature(inputs=shared("inputs"), outputs=shared("outputs"), params=params)


def _strip_tensor_names(signature_defs):
    """SignatureDefs without graph tensor names, which clients never see."""
    return {
        name: {side: {k: {"dtype": t["dtype"], "shape": t["shape"]} for k, t in s[side].items()}
               for side in ("inputs", "outputs")}
        for name, s in signature_defs.items()
    }
