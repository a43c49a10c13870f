"""A live ``tf.Module`` -> :class:`ServingGraph`: one signature per ``input_signature`` method.

Each ``tf.function`` method of the module with an ``input_signature`` becomes one SignatureDef
named after the method (``__call__`` as ``serving_default``, or ``signature_name`` when given),
its input keys the ``TensorSpec`` names (``input_<i>`` for an unnamed one), its output keys the
keys of the dict it returns (``output_<i>`` for a tensor or a tuple). The traced functions are
frozen and merged by :mod:`.functions`; the variables keep their checkpoint names
(:func:`~.functions.variable_names`). Used by the checkpoint source (a ``tf.Module`` from
``build_fn`` with its ``tf.train.Checkpoint`` restored) and open to any source holding a module.

Example:
    >>> import tensorflow as tf
    >>> from mlflow_eas_savedmodel.graph.module import module_to_serving_graph
    >>> module = tf.Module()
    >>> module.w = tf.Variable([[1.0], [2.0]])
    >>> module.score = tf.function(
    ...     lambda x: {"y": x @ module.w}, input_signature=[tf.TensorSpec([None, 2], name="x")])
    >>> serving_graph = module_to_serving_graph(module)
    >>> serving_graph.signatures["score"].inputs, sorted(serving_graph.signatures["score"].outputs)
    ({'x': 'x:0'}, ['y'])
"""

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.functions import (
    Endpoint,
    concrete_functions_to_serving_graph,
    variable_names,
)
from mlflow_eas_savedmodel.graph.serving_graph import DEFAULT_SIGNATURE_NAME


def module_endpoints(module, signature_name=None):
    """The :class:`~.functions.Endpoint` of each ``input_signature`` method of ``module``.

    Args:
        module: a ``tf.Module`` (or any trackable with ``tf.function`` attributes).
        signature_name: the name of ``__call__``'s signature (default ``serving_default``).
    """
    tf = import_tensorflow()
    endpoints = []
    for attr in ["__call__", *sorted(a for a in dir(module) if not a.startswith("_"))]:
        fn = getattr(module, attr, None)
        if not isinstance(fn, tf.types.experimental.PolymorphicFunction) or fn.input_signature is None:
            continue
        name = attr
        if attr == "__call__":
            name = signature_name or DEFAULT_SIGNATURE_NAME
        concrete = fn.get_concrete_function()
        specs = tf.nest.flatten(concrete.structured_input_signature)
        input_keys = [s.name or f"input_{i}" for i, s in enumerate(specs)]
        structured = concrete.structured_outputs
        if isinstance(structured, dict):
            output_keys = sorted(structured)
        else:
            output_keys = [f"output_{i}" for i in range(len(tf.nest.flatten(structured)))]
        endpoints.append(Endpoint(name, concrete, input_keys, output_keys))
    return endpoints


def module_to_serving_graph(module, signature_name=None, default_signature=None, origin=""):
    """Traces, freezes and merges the ``input_signature`` methods of ``module``.

    Args:
        module: the ``tf.Module``, its variables holding the values to serve.
        signature_name: the name of ``__call__``'s signature (default ``serving_default``).
        default_signature: the signature used when a request names none.
        origin: where the module came from, for the error (``" from `build_fn`"``).

    Raises:
        MlflowException: the module has no ``tf.function`` with an ``input_signature``.
    """
    endpoints = module_endpoints(module, signature_name)
    if not endpoints:
        raise invalid_parameter_value(
            f"The {type(module).__name__}{origin} has no tf.function with an "
            "input_signature, so there is nothing to serve. Decorate its call with "
            "`@tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name='x')])`."
        )
    return concrete_functions_to_serving_graph(endpoints, variable_names(module), default_signature)
