"""A live Keras model (Keras 3 or tf_keras) -> a one-signature :class:`ServingGraph`.

Used by the Keras source (a model object or a ``.keras``/``.h5`` file it loaded) and by the
checkpoint source (a Keras model from ``build_fn`` with a ``tf.train.Checkpoint`` restored).

Why trace and freeze instead of ``model.export``: every SavedModel TF 2.21 writes the TF2 way
fails in EAS's TF 1.12-2.3 runtimes (``VarHandleOp.debug_name``, ``DisableCopyOnRead`` in the
function library). So we trace ``model(inputs, training=False)`` once as a ``tf.function`` with
named ``TensorSpec``s, freeze it with control flow lowered to v1 ops (the variables as
stand-ins, see :mod:`.weights`), and let the export write the weights as reference variables,
read piece by piece from the live Keras variables. Rebuilding the model as a TF1 graph with
reference variables directly would need a second implementation of every Keras layer; tracing
reuses Keras' own ``call`` and keeps numbers identical. Lookup tables (``StringLookup``) cannot
be frozen, so they are re-created as ``HashTableV2`` plus an ``InitializeTableV2`` init op
(:mod:`.tables`).

``inputs=``/``outputs=`` only rename the model's own tensors (one key each, in the model's
order); a key that is another tensor's name is refused, since Keras orders dict tensors by name.
"""

import inspect

import numpy as np

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph import edit
from mlflow_eas_savedmodel.graph.freeze import freeze_concrete_function
from mlflow_eas_savedmodel.graph.functions import Endpoint
from mlflow_eas_savedmodel.graph.reference import concrete_function_reference
from mlflow_eas_savedmodel.graph.serving_graph import (
    DEFAULT_SIGNATURE_NAME,
    ServingGraph,
    SignatureSpec,
    sanitize_node_name,
)
from mlflow_eas_savedmodel.graph.tables import recreate_tables


def is_keras_model(model):
    """Whether ``model`` is a Keras 3 or tf_keras model (told by its classes: Keras not imported)."""
    for cls in type(model).__mro__:
        module = cls.__module__ or ""
        if cls.__name__ in ("Model", "Functional", "Sequential") and (
            module.startswith("keras") or module.startswith("tf_keras")
        ):
            return True
    return False


def keras_model_to_serving_graph(
    model, inputs=None, outputs=None, signature_name=DEFAULT_SIGNATURE_NAME, input_example=None
):
    """Traces and freezes a built Keras model into a one-signature :class:`ServingGraph`.

    Args:
        model: the Keras model, its variables holding the values to serve.
        inputs: ``{key: model input | its name}`` or a list of keys in the model's order
            (default: the model's own input names).
        outputs: same forms, for the model's outputs.
        signature_name: the name of the one SignatureDef.
        input_example: the input shapes and dtypes of a model without symbolic inputs
            (a subclassed model never called); ignored when the model has them.

    Returns:
        The :class:`ServingGraph` (``source="keras"``); ``reference`` runs the traced function.
    """
    tf = import_tensorflow()
    structure, model_inputs = _model_inputs(model, input_example)
    input_keys = _resolve_keys(inputs, "inputs", model_inputs, "input")

    taken = set()
    specs = [
        tf.TensorSpec(shape, dtype, name=edit.unique_name(sanitize_node_name(key), taken))
        for key, (_, shape, dtype, _) in zip(input_keys, model_inputs)
    ]
    # Keras 3 records only the shapes of a subclassed model's first call: its dtypes are guessed.
    guessed = input_example is None and not _symbolic(model, "inputs") and hasattr(
        model, "_build_shapes_dict"
    )
    concrete, traced_struct = _trace(
        model, structure, [item[0] for item in model_inputs], specs, guessed
    )
    struct = traced_struct or getattr(model, "_outputs_struct", None)
    out_items = [(k, None, None, t) for k, t in zip(
        _model_output_keys(model, len(concrete.outputs), struct),
        _symbolic_outputs(model, len(concrete.outputs)),
    )]
    output_keys = _resolve_keys(outputs, "outputs", out_items, "output")

    graph_def, in_names, out_names, weights, values, tables = freeze_concrete_function(
        concrete, _variable_names(model), signatures=[signature_name]
    )
    init_ops = recreate_tables(graph_def, tables, _lookup_tables(model)) if tables else []
    out_names = edit.name_outputs(graph_def, out_names, output_keys)
    signature = SignatureSpec(
        inputs=dict(zip(input_keys, in_names)), outputs=dict(zip(output_keys, out_names))
    )
    return ServingGraph(
        graph_def=graph_def,
        signatures={signature_name: signature},
        default_signature=signature_name,
        weights=weights,
        weight_values=values,
        init_ops=init_ops,
        source="keras",
        reference=concrete_function_reference([Endpoint(signature_name, concrete, input_keys, output_keys)]),
    )


def _trace(model, structure, default_keys, specs, guessed=False):
    """``(concrete function, {output key: None} or None)``: ``model`` traced on ``specs``.

    The traced function returns a flat list (its outputs' order is the one the model's dict
    output was built in); the dict's keys, in that order, are known only inside the trace and
    come back as the second value (``None`` for a tensor or list output).
    """
    tf = import_tensorflow()
    seen = {}

    def call(*args):
        if structure == "dict":
            feed = dict(zip(default_keys, args))
        elif structure == "list":
            feed = list(args)
        else:
            feed = args[0]
        result = model(feed, training=False)
        if isinstance(result, dict):
            seen["struct"] = dict.fromkeys(result)
            return [result[k] for k in result]
        seen["struct"] = None
        return list(result) if isinstance(result, (list, tuple)) else [result]

    try:
        concrete = tf.function(call).get_concrete_function(*specs)
        if guessed:
            # A guessed dtype can trace and still fail at run time (a float input cast to
            # string by a StringLookup): run one batch of zeros to know before it is saved.
            concrete(*[tf.zeros([1] + [d or 1 for d in s.shape[1:]], s.dtype) for s in specs])
    except Exception as e:  # noqa: BLE001 - tracing surfaces any layer error
        if guessed:
            raise invalid_parameter_value(
                f"Tracing the subclassed Keras model {model.name!r} failed: {e}. Keras 3 records "
                "only the input shapes of its first call, so the inputs were traced as "
                f"{[(s.name, s.shape, s.dtype.name) for s in specs]} (dtype `model.input_dtype`). "
                "Pass `input_example=` with a batch of the real inputs (e.g. a dict of string "
                "or int arrays) so their dtypes are known."
            ) from e
        raise invalid_parameter_value(
            f"Tracing the Keras model with inputs {[(s.name, s.shape, s.dtype.name) for s in specs]} "
            f"failed: {e}. Check the input shapes/dtypes (or pass `input_example=`)."
        ) from e
    return concrete, seen["struct"]


def _model_inputs(model, input_example):
    """``(structure, [(default_key, shape, dtype, keras_tensor_or_None)])`` of the model's inputs.

    A functional or Sequential model has symbolic inputs. A subclassed one (Keras 3 or tf_keras,
    e.g. tensorflow-recommenders' models) has none (tf_keras' ``model.inputs`` is ``None``): its
    inputs come from ``input_example`` (a batch, or a dict of batches), else from what its first
    call recorded: tf_keras' ``save_spec`` (shapes and dtypes), Keras 3's build shapes (dtypes
    are ``model.input_dtype``, as ``model.export`` takes them).
    """
    tf = import_tensorflow()
    struct = getattr(model, "_inputs_struct", None)
    tensors = _symbolic(model, "inputs")
    if tensors:
        if isinstance(struct, dict):
            keys = list(struct.keys())
            tensors = [struct[k] for k in keys]
            structure = "dict"
        else:
            names = getattr(model, "input_names", None)
            # The InputLayer's name ('input_layer', or the name given to keras.Input), not the
            # symbolic tensor's auto-generated 'keras_tensor_3'.
            keys = list(names) if names else [_input_layer_name(t) for t in tensors]
            structure = "single" if len(tensors) == 1 else "list"
        return structure, [
            (k, tuple(t.shape), tf.as_dtype(t.dtype), t) for k, t in zip(keys, tensors)
        ]
    n_arguments = _required_call_arguments(model)
    if n_arguments > 1:
        _refuse_several_arguments(model, n_arguments)
    if input_example is not None:
        return _example_inputs(model, input_example)
    recorded = _recorded_inputs(model)
    if recorded is not None:
        return recorded
    raise invalid_parameter_value(
        f"The Keras model {model.name!r} has no defined inputs. Build it with `keras.Input(...)`, "
        "call it once on a batch, or pass `input_example=` (a batch, or a dict of batches for a "
        f"model taking a dict) so the input shapes and dtypes are known: this "
        f"{type(model).__name__} was not built on `keras.Input(...)` (a subclassed model) and "
        "was never called."
    )


def _symbolic(model, what):
    """The model's symbolic ``inputs``/``outputs`` as a list, or None (a subclassed model)."""
    try:
        tensors = getattr(model, what)
    except (AttributeError, ValueError):  # Keras 3 raises for a model never called
        return None
    return list(tensors) if tensors else None


def _example_dtype(array):
    tf = import_tensorflow()
    if array.dtype.kind in "USO":  # numpy str/bytes/object: Keras' string inputs
        return tf.string
    try:
        return tf.as_dtype(array.dtype)
    except TypeError as e:
        raise invalid_parameter_value(
            f"`input_example=` holds an array of dtype {array.dtype}, which TensorFlow has no "
            "dtype for. Pass numbers, strings or booleans."
        ) from e


def _example_inputs(model, input_example):
    def item(key, value):
        array = np.asarray(value)
        if array.ndim == 0:
            raise invalid_parameter_value(
                f"`input_example=` for {key!r} is a scalar; the model {model.name!r} needs a "
                "batch. Pass an array whose first dimension is the batch (e.g. `x[:2]`)."
            )
        return (key, (None,) + array.shape[1:], _example_dtype(array), None)

    if isinstance(input_example, dict):
        return "dict", [item(k, v) for k, v in input_example.items()]
    if isinstance(input_example, (list, tuple)) and len(input_example) > 1 and not np.isscalar(
        input_example[0]
    ):
        return "list", [item(f"inputs_{i}", v) for i, v in enumerate(input_example)]
    return "single", [item("inputs", input_example)]


def _recorded_inputs(model):
    """The inputs a subclassed model's first call recorded, or None if it records none."""
    tf = import_tensorflow()
    save_spec = getattr(model, "save_spec", None)  # tf_keras: TensorSpecs of the first call
    if callable(save_spec) and not hasattr(model, "_build_shapes_dict"):
        spec = save_spec(dynamic_batch=True)
        if not spec:
            return None
        args, kwargs = spec
        if len(args) != 1 or kwargs:
            _refuse_several_arguments(model, len(args) + len(kwargs))
        return _spec_inputs(model, args[0], lambda s: (tuple(s.shape), tf.as_dtype(s.dtype)))
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if not shapes or not getattr(model, "built", False):
        return None
    if len(shapes) != 1:
        _refuse_several_arguments(model, len(shapes))
    dtype = tf.as_dtype(getattr(model, "input_dtype", None) or "float32")
    return _spec_inputs(
        model, next(iter(shapes.values())), lambda shape: ((None,) + tuple(shape)[1:], dtype)
    )


def _spec_inputs(model, spec, shape_dtype):
    """One recorded argument (a dict, list or single spec) -> ``_model_inputs``' form."""

    def is_leaf(value):
        return not isinstance(value, (dict, list, tuple)) or all(
            isinstance(d, (int, type(None))) for d in value
        )

    if isinstance(spec, dict) and all(is_leaf(v) for v in spec.values()):
        return "dict", [(k, *shape_dtype(v), None) for k, v in spec.items()]
    if is_leaf(spec):
        return "single", [("inputs", *shape_dtype(spec), None)]
    if isinstance(spec, (list, tuple)) and all(is_leaf(v) for v in spec):
        return "list", [(f"inputs_{i}", *shape_dtype(v), None) for i, v in enumerate(spec)]
    raise invalid_parameter_value(
        f"The Keras model {model.name!r} was called with nested inputs, which a SignatureDef "
        "cannot hold. Make `call` take one tensor, a list of tensors or a flat dict of tensors."
    )


def _required_call_arguments(model):
    """How many arguments a subclassed model's ``call`` requires (``training``/``mask`` aside)."""
    try:
        parameters = inspect.signature(model.call).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(
        1
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.default is p.empty
        and p.name not in ("training", "mask")
    )


def _refuse_several_arguments(model, n):
    raise invalid_parameter_value(
        f"The subclassed Keras model {model.name!r} takes its inputs as {n} arguments of "
        "`call`; a SignatureDef is traced from one. Make `call` take one tensor, a list or a "
        "dict of tensors (e.g. `def call(self, features): features['a'] ...`), or wrap the "
        "model in a functional one built on `keras.Input(...)`s."
    )


def _input_layer_name(tensor):
    history = getattr(tensor, "_keras_history", None)
    layer = getattr(history, "operation", None) or getattr(history, "layer", None)
    return getattr(layer, "name", None) or tensor.name.split(":")[0]


def _model_output_keys(model, n_outputs, struct):
    if isinstance(struct, dict):
        return list(struct.keys())
    names = getattr(model, "output_names", None)
    if names and len(names) == n_outputs:
        return list(names)
    return ["outputs"] if n_outputs == 1 else [f"outputs_{i}" for i in range(n_outputs)]


def _resolve_keys(arg, what, model_items, kind):
    """Maps ``inputs=``/``outputs=`` to one key per model tensor, in the model's order."""
    defaults = [item[0] for item in model_items]
    if arg is None:
        keys = defaults
    elif isinstance(arg, (list, tuple)):
        if len(arg) != len(model_items):
            raise invalid_parameter_value(
                f"`{what}=` lists {len(arg)} keys but the model has {len(model_items)} {what}: "
                f"{defaults}. Pass one key per {kind}, in the model's order."
            )
        keys = list(arg)
    elif isinstance(arg, dict):
        keys = [None] * len(model_items)
        for key, ref in arg.items():
            index = _match(ref, model_items)
            if index is None:
                raise invalid_parameter_value(
                    f"`{what}={{{key!r}: ...}}` does not refer to an {kind} of the model. Use "
                    f"`model.{what}[i]` or one of the names {defaults}."
                )
            if keys[index] is not None:
                raise invalid_parameter_value(
                    f"`{what}=` maps both {keys[index]!r} and {key!r} to the model's {kind} "
                    f"{defaults[index]!r}. Give each {kind} one key."
                )
            keys[index] = key
        missing = [defaults[i] for i, k in enumerate(keys) if k is None]
        if missing:
            raise invalid_parameter_value(
                f"`{what}=` does not name the model's {kind}s {missing}. Every {kind} needs a key."
            )
    else:
        raise invalid_parameter_value(
            f"`{what}=` must be a dict {{key: tensor or name}} or a list of keys."
        )
    _check_keys(keys, what)
    _check_not_swapped(keys, defaults, what, kind, arg)
    return keys


def _check_not_swapped(keys, defaults, what, kind, arg):
    """Refuses a key that is the name of another of the model's tensors.

    Keras orders dict outputs (and inputs) by name, so ``outputs={"score": model.outputs[0]}``
    can point ``score`` at the output named ``probs``: the artifact would then serve the wrong
    tensor under the expected key. A warning would be one log line among many while predictions
    come back silently swapped; renaming a tensor to another one's name is the rare case, and
    any other key does it. So it is an error.
    """
    order = [k for k in arg if k in keys] if isinstance(arg, dict) else keys
    for key in order:
        index = keys.index(key)
        if key in defaults and defaults.index(key) != index:
            form = f"`{what}={{{key!r}: ...}}`" if isinstance(arg, dict) else f"`{what}=` key {key!r}"
            raise invalid_parameter_value(
                f"{form} refers to the model's {kind} {defaults[index]!r}, but {key!r} is the name "
                f"of another {kind} of the model: the keys would be swapped. Keras orders a "
                f"model's dict {what} by name, so `model.{what}[i]` need not be the i-th one "
                f"written. Refer to the {kind} you mean by name, e.g. `{what}={{{key!r}: {key!r}}}`, "
                f"or leave `{what}=` out to keep the model's names {defaults}."
            )


def _match(ref, items):
    for i, (name, _, _, tensor) in enumerate(items):
        if tensor is not None and ref is tensor:
            return i
    for i, (name, _, _, tensor) in enumerate(items):
        ref_name = ref if isinstance(ref, str) else getattr(ref, "name", None)
        if ref_name is not None and ref_name in (name, getattr(tensor, "name", None)):
            return i
    return None


def _check_keys(keys, what):
    for k in keys:
        if not isinstance(k, str) or not k.strip():
            raise invalid_parameter_value(
                f"`{what}=` has an empty or non-string key {k!r}. Keys must be names."
            )
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise invalid_parameter_value(
            f"`{what}=` uses the keys {dupes} more than once. Keys must be unique."
        )


def _variable_names(model):
    """``id(resource handle)`` -> checkpoint name, for Keras 3 and tf_keras variables."""
    names, taken = {}, set()
    for v in model.variables:
        inner = getattr(v, "_value", None)
        inner = inner if inner is not None else v
        handle = getattr(inner, "handle", None)
        if handle is None:
            continue
        raw = getattr(v, "path", None) or v.name.split(":")[0]
        names[id(handle)] = edit.unique_name(sanitize_node_name(raw), taken)
    return names


def _lookup_tables(model):
    """``id(resource handle)`` -> table object for the lookup tables Keras layers hold."""
    tables = {}
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else [model]
    for layer in layers:
        for value in list(vars(layer).values()):
            handle = getattr(value, "resource_handle", None)
            if handle is not None and hasattr(value, "export"):
                tables[id(handle)] = value
    return tables


def _symbolic_outputs(model, n):
    outs = _symbolic(model, "outputs")
    struct = getattr(model, "_outputs_struct", None)
    if isinstance(struct, dict):
        outs = list(struct.values())
    return outs if outs and len(outs) == n else [None] * n
