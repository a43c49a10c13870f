"""Signature normalisation: ``inputs=``/``outputs=``/``signatures=`` -> checked specs.

What users pass to name a TF1 graph's signatures (``tf.Tensor`` objects, names such as
``"x:0"``, ``TensorInfo`` or ``SignatureDef`` protos, method aliases) is resolved here against
the graph, once, for every source that serves a TF1 graph through
:mod:`.session_graph` (sessions, checkpoints, TF1 SavedModel folders):
:func:`collect_signatures` builds the one signature map, :func:`pick_default_signature` picks
the default (also for traced functions, :mod:`.functions`) and :func:`check_feeds` refuses a
signature whose outputs need an unfed placeholder or update a variable.
"""

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.serving_graph import (
    DEFAULT_SIGNATURE_NAME,
    METHOD_ALIASES,
    SignatureSpec,
)

_PLACEHOLDER_OPS = ("Placeholder", "PlaceholderV2")
_SIGNATURE_FIELDS = ("inputs", "outputs", "method", "method_name")
# Ops that change variable state; on a serving path they make answers depend on past requests.
_STATE_UPDATE_OPS = frozenset(
    "Assign AssignAdd AssignSub AssignVariableOp AssignAddVariableOp AssignSubVariableOp CountUpTo "
    "ResourceCountUpTo ScatterUpdate ScatterAdd ScatterSub ScatterMul ScatterDiv ScatterMin "
    "ScatterMax ScatterNdUpdate ScatterNdAdd ScatterNdSub ResourceScatterUpdate ResourceScatterAdd "
    "ResourceScatterSub ResourceScatterMul ResourceScatterDiv ResourceScatterMin ResourceScatterMax "
    "ResourceScatterNdUpdate ResourceScatterNdAdd ResourceScatterNdSub".split()
)
_STATE_UPDATE_PREFIXES = ("Apply", "ResourceApply", "SparseApply", "ResourceSparseApply")


def collect_signatures(graph, inputs, outputs, signature_name, signatures):
    """``{name: (SignatureSpec, input ops by tensor name, output tensors)}`` checked against ``graph``.

    ``inputs=``/``outputs=`` (one signature) and ``signatures=`` (several) end up in one map.
    """
    raw = {}
    if signatures is not None:
        if not isinstance(signatures, dict):
            raise invalid_parameter_value(
                "`signatures=` must be a dict {name: {'inputs': {...}, 'outputs': {...}}}, got "
                f"{type(signatures).__name__}."
            )
        raw.update(signatures)
    if signature_name is not None and signature_name in raw:
        raise invalid_parameter_value(
            f"The signature name {signature_name!r} is used twice: as `signature_name=` and as a "
            "key of `signatures=`. Give every signature one unique name (drop `signature_name=` "
            "and put all signatures in `signatures=`)."
        )
    if inputs is not None or outputs is not None:
        name = signature_name or DEFAULT_SIGNATURE_NAME
        if name in raw:
            raise invalid_parameter_value(
                f"The signature name {name!r} is used twice: by `inputs=`/`outputs=` and as a key "
                "of `signatures=`. Pass `signature_name='another_name'` or put both in "
                "`signatures=`."
            )
        raw[name] = {"inputs": inputs, "outputs": outputs}
    elif signature_name is not None:
        raise invalid_parameter_value(
            f"`signature_name={signature_name!r}` names the signature made of `inputs=` and "
            "`outputs=`, which are missing. Pass them, or use `default_signature=` to pick one "
            "of `signatures=`."
        )
    if not raw:
        raise invalid_parameter_value(
            "The signature map is empty: pass `inputs={'x': x}, outputs={'y': y}` or "
            "`signatures={'serving_default': {'inputs': {...}, 'outputs': {...}}}`."
        )
    return {name: _signature(graph, name, value) for name, value in raw.items()}


def _signature(graph, name, value):
    if not isinstance(name, str) or not name.strip():
        raise invalid_parameter_value(
            f"Signature name {name!r} is empty or not a string. Name every signature."
        )
    from_proto = hasattr(value, "method_name") and hasattr(value, "inputs")
    if from_proto:  # a SignatureDef proto
        value = {
            "inputs": dict(value.inputs),
            "outputs": dict(value.outputs),
            "method": value.method_name or "predict",
        }
    if not isinstance(value, dict):
        raise invalid_parameter_value(
            f"Signature {name!r} must be a dict {{'inputs': {{...}}, 'outputs': {{...}}, "
            f"'method': 'predict'}} or a SignatureDef, got {type(value).__name__}."
        )
    unknown = sorted(set(value) - set(_SIGNATURE_FIELDS))
    if unknown:
        raise invalid_parameter_value(
            f"Signature {name!r} has unknown fields {unknown}; it takes {list(_SIGNATURE_FIELDS[:3])}."
        )
    method = value.get("method", value.get("method_name")) or "predict"
    method_name = METHOD_ALIASES.get(method, method)
    if method_name not in METHOD_ALIASES.values():
        raise invalid_parameter_value(
            f"Signature {name!r} has method {method!r}. Use 'predict', 'classify' or 'regress' "
            f"(or {sorted(METHOD_ALIASES.values())})."
        )
    # A SignatureDef read from a folder may take no inputs (constants, a model version): kept.
    input_tensors = _tensors(graph, name, "inputs", value.get("inputs"), allow_empty=from_proto)
    output_tensors = _tensors(graph, name, "outputs", value.get("outputs"))
    spec = SignatureSpec(
        inputs={k: t.name for k, t in input_tensors.items()},
        outputs={k: t.name for k, t in output_tensors.items()},
        method_name=method_name,
    )
    return spec, {t.name: t.op for t in input_tensors.values()}, list(output_tensors.values())


def _tensors(graph, signature, what, mapping, allow_empty=False):
    if allow_empty and isinstance(mapping, dict) and not mapping:
        return {}
    if not isinstance(mapping, dict) or not mapping:
        raise invalid_parameter_value(
            f"Signature {signature!r} has no {what}: pass `{what}=` as a non-empty dict "
            f"{{key: tensor or 'name:0'}}."
        )
    resolved, seen = {}, {}
    for key, ref in mapping.items():
        if not isinstance(key, str) or not key.strip():
            raise invalid_parameter_value(
                f"Signature {signature!r} has an empty or non-string {what[:-1]} key {key!r}. "
                "Keys must be non-empty names such as 'image'."
            )
        tensor = _tensor(graph, signature, what, key, ref)
        if what == "inputs" and tensor.name in seen:
            raise invalid_parameter_value(
                f"Signature {signature!r} maps the input keys {seen[tensor.name]!r} and {key!r} to "
                f"the same tensor {tensor.name!r}. Give each input tensor one key."
            )
        seen[tensor.name] = key
        resolved[key] = tensor
    return resolved


def _tensor(graph, signature, what, key, ref):
    tf = import_tensorflow()
    where = f"Signature {signature!r} {what[:-1]} {key!r}"
    if isinstance(ref, tf.Operation):
        ref = ref.outputs[0] if len(ref.outputs) == 1 else ref.name
    if isinstance(ref, tf.Variable):
        raise invalid_parameter_value(
            f"{where} is the variable {ref.name!r}. Pass a tensor that reads it (e.g. "
            "`tf.identity(v)`) or the tensor computed from it."
        )
    if hasattr(ref, "graph") and hasattr(ref, "op"):
        if ref.graph is not graph:
            raise invalid_parameter_value(
                f"{where} is the tensor {ref.name!r} of another graph than the session's. Build "
                "the model in the session's graph (`with sess.graph.as_default(): ...`) or pass "
                "the tensor of that graph."
            )
        return ref
    name = ref if isinstance(ref, str) else getattr(ref, "name", None)
    if not isinstance(name, str) or not name:
        raise invalid_parameter_value(
            f"{where} is a {type(ref).__name__}; pass a tf.Tensor of the session's graph, a "
            "tensor name such as 'x:0', or a TensorInfo."
        )
    if getattr(ref, "coo_sparse", None) is not None and ref.WhichOneof("encoding") != "name":
        raise invalid_parameter_value(
            f"{where} is a sparse or composite tensor; only dense tensors can be served."
        )
    if ":" not in name:
        name += ":0"
    try:
        return graph.get_tensor_by_name(name)
    except (KeyError, ValueError):
        similar = sorted(op.name for op in graph.get_operations() if op.type in _PLACEHOLDER_OPS)
        raise invalid_parameter_value(
            f"{where} names the tensor {name!r}, which is not in the session's graph. Use a name "
            f"like 'x:0' (op name, colon, output index); the graph's placeholders are {similar[:20]}."
        ) from None


def pick_default_signature(names, default_signature):
    """``default_signature`` checked against ``names``; if ``None``, ``serving_default`` when
    present, else the first of ``names`` (in their order)."""
    if default_signature is None:
        if DEFAULT_SIGNATURE_NAME in names:
            return DEFAULT_SIGNATURE_NAME
        return next(iter(names))
    if default_signature not in names:
        raise invalid_parameter_value(
            f"`default_signature={default_signature!r}` is not one of the signatures "
            f"{sorted(names)}. Pick one of those."
        )
    return default_signature


def check_feeds(signature, spec, input_ops, output_tensors):
    """Every placeholder an output needs must be an input of its signature (or it cannot run).

    One walk for all outputs: what an earlier output reached without error needs no second visit.
    """
    fed = {op.name for op in input_ops.values()}
    seen = set()
    for output in output_tensors:
        stack = [output.op]
        while stack:
            op = stack.pop()
            if op.name in seen:
                continue
            seen.add(op.name)
            if op.name in fed:
                continue
            if op.type in _STATE_UPDATE_OPS or op.type.startswith(_STATE_UPDATE_PREFIXES):
                target = op.inputs[0].op.name if op.inputs else "?"
                raise invalid_parameter_value(
                    f"Signature {signature!r} updates a variable on its serving path: node "
                    f"{op.name!r} ({op.type}) writes {target!r}. Stateful serving graphs are not "
                    "supported: the export freezes variables into weights restored at every load, "
                    "and EAS runs several workers, so the update would be lost and each worker "
                    "would answer differently. Serve a graph without the update (keep it in the "
                    "training graph, or compute the state outside the model)."
                )
            if op.type in _PLACEHOLDER_OPS:
                key = next(k for k, t in spec.outputs.items() if t == output.name)
                raise invalid_parameter_value(
                    f"Signature {signature!r}: output {key!r} ({output.name}) depends on the "
                    f"placeholder {op.name!r}, which is not an input of this signature. Add it to "
                    f"the signature's inputs, e.g. {{'{op.name}': '{op.name}:0'}}."
                )
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
