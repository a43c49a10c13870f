"""SignatureDefs <-> the flavor's MLmodel metadata, and the MLflow signature derived from them.

The metadata is plain data (no TensorFlow needed to read it): ``inspect`` and the serving
validation work from it alone. Shapes use ``-1`` for unknown dimensions and ``None`` for an
unknown rank; dtypes are TensorFlow's names (``float32``, ``string``...).
"""

import numpy as np

SIGNATURE_NAME_PARAM = "signature_name"


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
    """The MLflow ``ModelSignature`` of the default SignatureDef, with a ``signature_name`` param.

    When the SignatureDefs take different input keys, the input schema is left out: MLflow would
    otherwise reject every request for a non-default SignatureDef before it reaches the model.
    Each request is then checked against the SignatureDef it names (see :mod:`.model`).
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    default = signature_defs[default_signature]
    input_keys = {tuple(sorted(s["inputs"])) for s in signature_defs.values()}
    known_rank = all(t["shape"] is not None for t in default["inputs"].values())
    # No input schema for a SignatureDef without inputs either: MLflow has no empty schema.
    inputs = _schema(default["inputs"]) if len(input_keys) == 1 and known_rank and default["inputs"] else None
    outputs = _schema(default["outputs"])
    params = ParamSchema([ParamSpec(SIGNATURE_NAME_PARAM, "string", default_signature)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)
