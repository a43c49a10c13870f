"""Request inputs for every SignatureDef: the saved input example, given inputs, or synthesised.

``check_runtime`` and the warm-up files both need one set of inputs per SignatureDef. The
saved input example (MLflow's ``input_example.json``), or inputs the caller gives, feed every
SignatureDef whose input keys they cover (a bare array covers one-input SignatureDefs); given
inputs may also be ``{signature: {key: array}}``, one set per SignatureDef. The others get
inputs built from the recorded dtypes and shapes: unknown dimensions (and an unknown rank)
become ``batch``, numbers are small seeded random values (0 or 1 for integers, so that
index-like inputs stay in range), strings are short words, except string inputs a parse op
reads, which get valid serialized ``tf.Example``\s (:mod:`..graph.example_spec`). Inputs are
cast to each SignatureDef's dtype, as the model's handle would.
"""

import numpy as np

from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.metadata import numpy_dtype

FROM_EXAMPLE = "input example"
FROM_CALLER = "given inputs"
SYNTHESISED = "synthesised"
_WORDS = (b"a", b"bb", b"ccc", b"dddd")


def load_input_example(mlmodel, local_model_path):
    """The model's saved input example as numpy (a dict or an array), or ``None``."""
    example = mlmodel.load_input_example(local_model_path)
    if example is None:
        return None
    try:
        import pandas as pd

        if isinstance(example, pd.DataFrame):
            return {c: np.stack(example[c].to_numpy()) for c in example.columns}
    except ImportError:  # pragma: no cover - pandas is a dependency of MLflow
        pass
    if isinstance(example, dict):
        return {k: np.asarray(v) for k, v in example.items()}
    return np.asarray(example)


def _cast(value, tensor, signature, key):
    dtype = numpy_dtype(tensor["dtype"])
    array = np.asarray(value)
    if dtype.kind == "O":
        if array.dtype.kind not in "OSU":
            raise invalid_parameter_value(
                f"Input {key!r} of signature {signature!r} takes strings; the given values are "
                f"{array.dtype}. Pass strings (or bytes)."
            )
        flat = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.reshape(-1).tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(array.shape)
    return array.astype(dtype, copy=False)


def synthesise(tensor, batch=2, seed=0):
    """An array of the recorded dtype and shape (unknown dimensions -> ``batch``)."""
    shape = [batch] if tensor["shape"] is None else [batch if d == -1 else d for d in tensor["shape"]]
    dtype = numpy_dtype(tensor["dtype"])
    rng = np.random.default_rng(seed)
    if dtype.kind == "O":
        out = np.empty(int(np.prod(shape)), dtype=object)
        out[:] = [_WORDS[i % len(_WORDS)] for i in range(out.size)]
        return out.reshape(shape)
    if dtype.kind == "b":
        return rng.random(shape) > 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def per_signature(inputs, signature_defs):
    """``inputs`` given per SignatureDef (``{signature: {key: array}}``), or ``None``.

    Inputs keyed by SignatureDef names whose values are dicts are per SignatureDef; anything
    else is one set of inputs for every SignatureDef whose keys it covers.
    """
    if (
        isinstance(inputs, dict)
        and inputs
        and all(k in signature_defs and isinstance(v, dict) for k, v in inputs.items())
    ):
        return inputs
    return None


def synthesise_signature(sig, batch=2, example_specs=None):
    """Synthesised inputs of one SignatureDef; serialized ``tf.Example``\s where a parse op
    reads the input (``example_specs``: ``{key: feature spec}``, see :mod:`..graph.example_spec`)."""
    feeds = {}
    for i, (key, tensor) in enumerate(sig["inputs"].items()):
        spec = (example_specs or {}).get(key)
        if spec is not None and tensor["dtype"] == "string":
            from mlflow_eas_savedmodel.graph.example_spec import serialized_examples

            shape = [batch] if tensor["shape"] is None else [batch if d == -1 else d for d in tensor["shape"]]
            feeds[key] = serialized_examples(spec, shape, seed=i)
        else:
            feeds[key] = synthesise(tensor, batch=batch, seed=i)
    return feeds


def _covering(keys, example):
    if isinstance(example, dict) and keys and all(k in example for k in keys):
        return {k: example[k] for k in keys}
    if example is not None and not isinstance(example, dict) and len(keys) == 1:
        return {keys[0]: example}
    return None


def inputs_per_signature(signature_defs, example=None, batch=2, example_specs=None):
    """``({signature: {key: array}}, {signature: whether ``example`` covered it})``.

    Args:
        signature_defs: the recorded SignatureDefs (``{name: {"inputs": ...}}``).
        example: the input example or the caller's inputs: ``{key: array}``, one array, or
            ``{signature: {key: array}}`` (see :func:`per_signature`); tagged by the caller as
            example or given, see :func:`resolve_inputs`.
        batch: the size of unknown dimensions in synthesised inputs.
        example_specs: ``{signature: {input key: tf.Example feature spec}}`` of the inputs a
            parse op reads: they get valid serialized examples when synthesised.
    """
    by_signature = per_signature(example, signature_defs)
    feeds, origins = {}, {}
    for name, sig in signature_defs.items():
        keys = list(sig["inputs"])
        if by_signature is not None:
            covered = _covering(keys, by_signature.get(name))
        else:
            covered = _covering(keys, example)
        if covered is not None:
            feeds[name] = {k: _cast(v, sig["inputs"][k], name, k) for k, v in covered.items()}
            origins[name] = True
        else:
            feeds[name] = synthesise_signature(sig, batch, (example_specs or {}).get(name))
            origins[name] = False
    return feeds, origins


def resolve_inputs(signature_defs, mlmodel, local_model_path, inputs=None, batch=2, example_specs=None):
    """Feeds per SignatureDef from ``inputs`` if given, else the saved example, else synthesised.

    ``inputs`` is ``{key: array}``, one array, or ``{signature: {key: array}}``.
    Returns ``({signature: {key: array}}, {signature: FROM_CALLER | FROM_EXAMPLE | SYNTHESISED})``.
    """
    given = inputs is not None
    example = inputs if given else load_input_example(mlmodel, local_model_path)
    by_signature = per_signature(example, signature_defs) if given else None
    feeds, covered = inputs_per_signature(signature_defs, example, batch=batch, example_specs=example_specs)
    if by_signature is not None:
        for name, value in by_signature.items():
            if not covered[name]:
                raise invalid_parameter_value(
                    f"The inputs given for SignatureDef {name!r} (keys {sorted(value)}) do not "
                    f"cover its inputs {list(signature_defs[name]['inputs'])}. Pass every one."
                )
    elif given and not any(covered.values()):
        raise invalid_parameter_value(
            f"The given inputs (keys {sorted(example) if isinstance(example, dict) else 'one array'}) "
            "match no SignatureDef; they take: "
            + "; ".join(f"{n}: {list(s['inputs'])}" for n, s in signature_defs.items())
            + ". Pass {key: array} with one SignatureDef's keys, or {signature: {key: array}}."
        )
    label = FROM_CALLER if given else FROM_EXAMPLE
    return feeds, {n: (label if c else SYNTHESISED) for n, c in covered.items()}


def load_inputs_file(path):
    """Inputs from a file (``check-runtime --input``): ``.npz`` or ``.json``.

    ``.npz``: one array per input key, or per ``SIGNATURE/KEY`` to give each SignatureDef its
    own (split at the last ``/``, so ``tensorflow/serving/regress/inputs`` works). ``.json``:
    ``{key: nested list}`` or ``{signature: {key: nested list}}``.
    """
    import json
    import os

    if not os.path.isfile(path):
        raise invalid_parameter_value(
            f"Input file {path!r} does not exist. Pass an .npz or .json file."
        )
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as e:
            raise invalid_parameter_value(
                f"Cannot read {path!r} as .npz ({e}). Write it with numpy.savez."
            ) from e
        nested = {}
        if arrays and all("/" in name for name in arrays):
            for name, value in arrays.items():
                signature, _, key = name.rpartition("/")
                nested.setdefault(signature, {})[key] = value
            return nested
        return arrays
    if path.endswith(".json"):
        try:
            with open(path) as f:
                data = json.load(f)
        except ValueError as e:
            raise invalid_parameter_value(
                f"Cannot read {path!r} as JSON ({e}). Fix the file."
            ) from e
        if not isinstance(data, dict) or not data:
            raise invalid_parameter_value(
                f"{path!r} must hold an object {{key: values}} or {{signature: {{key: values}}}}."
            )
        return {
            k: ({kk: np.asarray(vv) for kk, vv in v.items()} if isinstance(v, dict) else np.asarray(v))
            for k, v in data.items()
        }
    raise invalid_parameter_value(f"Input file {path!r} must end in .npz or .json.")
