"""Request inputs for every SignatureDef: the saved input example, given inputs, or synthesised.

``check_runtime`` and the warm-up files both need one set of inputs per SignatureDef. The
saved input example (MLflow's ``input_example.json``), or inputs the caller gives, feed every
SignatureDef whose input keys they cover (a bare array covers one-input SignatureDefs). The
others get inputs built from the recorded dtypes and shapes: unknown dimensions (and an
unknown rank) become ``batch``, numbers are small seeded random values (0 or 1 for integers,
so that index-like inputs stay in range), strings are short words. Inputs are cast to each
SignatureDef's dtype, as the model's handle would.
"""

import numpy as np

from mlflow_eas_savedmodel.errors import invalid
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
            raise invalid(
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


def inputs_per_signature(signature_defs, example=None, batch=2):
    """``({signature: {key: array}}, {signature: where the inputs came from})``.

    Args:
        signature_defs: the recorded SignatureDefs (``{name: {"inputs": ...}}``).
        example: the input example or the caller's inputs: ``{key: array}`` or one array
            (tagged by the caller as example or given, see :func:`resolve_inputs`).
        batch: the size of unknown dimensions in synthesised inputs.
    """
    feeds, origins = {}, {}
    for name, sig in signature_defs.items():
        keys = list(sig["inputs"])
        covered = None
        if isinstance(example, dict) and keys and all(k in example for k in keys):
            covered = {k: example[k] for k in keys}
        elif example is not None and not isinstance(example, dict) and len(keys) == 1:
            covered = {keys[0]: example}
        if covered is not None:
            feeds[name] = {k: _cast(v, sig["inputs"][k], name, k) for k, v in covered.items()}
            origins[name] = True
        else:
            feeds[name] = {
                k: synthesise(t, batch=batch, seed=i) for i, (k, t) in enumerate(sig["inputs"].items())
            }
            origins[name] = False
    return feeds, origins


def resolve_inputs(signature_defs, mlmodel, local_model_path, inputs=None, batch=2):
    """Feeds per SignatureDef from ``inputs`` if given, else the saved example, else synthesised.

    Returns ``({signature: {key: array}}, {signature: FROM_CALLER | FROM_EXAMPLE | SYNTHESISED})``.
    """
    given = inputs is not None
    example = inputs if given else load_input_example(mlmodel, local_model_path)
    feeds, covered = inputs_per_signature(signature_defs, example, batch=batch)
    if given and not any(covered.values()):
        raise invalid(
            f"The given inputs (keys {sorted(example) if isinstance(example, dict) else 'one array'}) "
            "match no SignatureDef; they take: "
            + "; ".join(f"{n}: {list(s['inputs'])}" for n, s in signature_defs.items())
            + ". Pass {key: array} with one SignatureDef's keys."
        )
    label = FROM_CALLER if given else FROM_EXAMPLE
    return feeds, {n: (label if c else SYNTHESISED) for n, c in covered.items()}
