"""Freezing: a traced function or a live session becomes a frozen ``GraphDef``, without weights.

We freeze rather than rebuild graphs by hand because TensorFlow's own converter already does the
hard, version-sensitive parts right: it inlines the function library, lowers ``While``/``If`` to
v1 ``Switch``/``Merge``/``Enter`` frames (old runtimes have no functional control flow, and 1.12's
TensorList ops differ), and rewrites every consumer's dtype when a resource read becomes a
constant. The converter is given a :class:`~.weights.StandIn` per variable instead of its value
(see :mod:`.weights` for why), so each variable becomes a one-element ``Const`` of its full shape
and the values never enter the ``GraphDef``; :mod:`.variables` turns those constants into
``VariableV2`` nodes and the export reads the values from the :class:`~.weights.WeightValue`
returned here.
"""

import numpy as np

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value, pipeline_stage
from mlflow_eas_savedmodel.graph import weights as _weights
from mlflow_eas_savedmodel.graph.op_facts import LARGE_CONSTANT_BYTES, VARIABLE_OPS
from mlflow_eas_savedmodel.graph.serving_graph import node_name

# A GraphDef is one protobuf message: below 2 GiB, with room left for the nodes themselves.
GRAPH_CONSTANTS_LIMIT = (2 << 30) - (64 << 20)
_EXACT_SIZE_FROM = 1 << 20


def _converter_classes():
    from tensorflow.python.framework import convert_to_constants as ctc

    class FunctionStandIns(ctc._FunctionConverterDataInEager):
        """``_FunctionConverterDataInEager`` with stand-ins for variables and large captures.

        Mirrors its ``_build_tensor_data``; only the values differ (``values`` keeps, per
        captured placeholder, where the real value is).
        """

        def _build_tensor_data(self):
            self.values = _function_stand_ins(self._func, self._tensor_data, ctc._TensorData)
            _read_inner_reference_variables(self._func, self.node_defs, self._tensor_data, ctc._TensorData)

    class SessionStandIns(ctc._ConverterData):
        """``_SessionConverterData`` that reads no variable: stand-ins from the nodes' attrs."""

        def __init__(self, sess, graph_def, output_node_names, on_error):
            from tensorflow.python.framework import graph_util

            graph_def = graph_util.extract_sub_graph(graph_def, output_node_names)
            super().__init__(graph_def)
            self.values = _session_stand_ins(sess, self.graph_def, on_error, self._tensor_data, ctc._TensorData)

    return FunctionStandIns, SessionStandIns


def _function_stand_ins(func, tensor_data, TensorData):
    """``{captured placeholder: WeightValue}``; fills ``tensor_data`` with stand-ins and small captures."""
    tf = import_tensorflow()
    values = {}
    variables = {}
    for var in func.graph.variables:
        for idx, captured in enumerate(func.captured_inputs):
            if var.handle is captured:
                variables[idx] = var
                break
    for idx, (external, internal) in enumerate(func.graph.captures):
        name = internal.name.split(":")[0]
        if idx in variables:
            var = variables[idx]
            shape = var.shape if var.shape.is_fully_defined() else tf.shape(var).numpy()
            value = _weights.EagerVariableValue(external, tuple(shape), var.dtype)
        elif external.dtype == tf.resource:
            continue  # lookup tables: the caller re-creates them
        elif (
            external.dtype != tf.string
            and external.shape.num_elements() * external.dtype.size >= LARGE_CONSTANT_BYTES
        ):
            value = _weights.EagerTensorValue(external)
        else:
            # The dtype is the tensor's: ``numpy()`` of a 0-d string is ``bytes``, which
            # has none, and numpy's ``S``/object dtypes do not say ``tf.string`` alike.
            tensor_data[name] = TensorData(
                numpy=np.asarray(external.numpy()), dtype=external.dtype.as_datatype_enum, index=idx
            )
            continue
        values[name] = value
        tensor_data[name] = TensorData(
            numpy=_weights.stand_in_for(value.shape, value.dtype),
            dtype=value.dtype.as_datatype_enum,
            index=idx,
        )
    return values


def _read_inner_reference_variables(func, node_defs, tensor_data, TensorData):
    """Reference variables created inside the function cannot be lifted; they are read
    whole, as the converter does (only TF1 code run inside a tf.function has them)."""
    tf = import_tensorflow()
    for node in node_defs.values():
        if node.op == "VariableV2" and node.name not in tensor_data:
            with func.graph.as_default():
                identity = tf.identity(func.graph.as_graph_element(node.name + ":0"))
            data = func.prune([], [identity.name])()[0].numpy()
            tensor_data[node.name] = TensorData(numpy=data, dtype=node.attr["dtype"].type, index=None)


def _session_stand_ins(sess, graph_def, on_error, tensor_data, TensorData):
    """``{variable node: SessionVariableValue}``; fills ``tensor_data`` with their stand-ins."""
    tf = import_tensorflow()
    values = {}
    for node in graph_def.node:
        if node.op not in VARIABLE_OPS:
            continue
        op = sess.graph.get_operation_by_name(node.name)
        dtype = tf.as_dtype(node.attr["dtype"].type)
        shape = tf.TensorShape(node.attr["shape"].shape)
        if not shape.is_fully_defined():
            # validate_shape=False variables: the value tells (read once, whole).
            probe = _weights.SessionVariableValue(sess, op, (), dtype, on_error)
            shape = tf.TensorShape(probe.read(0, 1).shape)
        value = _weights.SessionVariableValue(sess, op, tuple(shape.as_list()), dtype, on_error)
        values[node.name] = value
        tensor_data[node.name] = TensorData(
            numpy=_weights.stand_in_for(value.shape, dtype),
            dtype=dtype.as_datatype_enum,
            index=None,
        )
    return values


def freeze_concrete_function(concrete_fn, variable_names, signatures=None):
    """Freezes a ``ConcreteFunction`` with control flow lowered to v1 ops, weights as stand-ins.

    Args:
        concrete_fn: the traced function; its flat outputs are the serving outputs.
        variable_names: ``id(resource handle)`` -> checkpoint name for the variables it captures.
        signatures: the SignatureDef names it serves, for the error a failure raises.

    Returns:
        ``(graph_def, input_tensor_names, output_tensor_names, weights, values, tables)`` where
        ``weights`` maps each stand-in constant to its variable name, ``values`` maps that
        variable name to its :class:`~.weights.WeightValue`, and ``tables`` lists the
        ``(placeholder_name, handle)`` pairs of captured lookup tables, which freezing cannot
        turn into constants and the caller must re-create.
    """
    import_tensorflow()
    from tensorflow.python.framework import convert_to_constants

    check_constants_fit(concrete_fn.graph)
    function_stand_ins, _ = _converter_classes()
    # The two steps of convert_variables_to_constants_v2_as_graph without its third, which
    # imports the frozen GraphDef back into a new ConcreteFunction that we would throw away.
    with pipeline_stage("freeze", signatures):
        converter_data = function_stand_ins(func=concrete_fn, lower_control_flow=True, aggressive_inlining=True)
        graph_def, _ = convert_to_constants._replace_variables_by_constants(converter_data=converter_data)
    captured = {id(internal): external for external, internal in concrete_fn.graph.captures}
    weights, values, tables = {}, {}, []
    for external, internal in concrete_fn.graph.captures:
        placeholder = node_name(internal.name)
        value = converter_data.values.get(placeholder)
        if id(external) in variable_names:
            name = variable_names[id(external)]
        elif value is not None:
            name = f"constants/{placeholder}"
        else:
            if external.dtype.name == "resource":
                tables.append((placeholder, external))
            continue
        if value is None:
            continue
        weights[placeholder] = name
        values[name] = value
    n_inputs = len(concrete_fn.inputs) - len(captured)
    inputs = [t.name for t in concrete_fn.inputs[:n_inputs]]
    outputs = [t.name for t in concrete_fn.outputs]
    return graph_def, inputs, outputs, weights, values, tables


def freeze_session(sess, output_node_names, on_error, signatures=None):
    """Freezes the part of ``sess.graph`` that ``output_node_names`` need, reading no variable.

    Args:
        sess: the live session.
        output_node_names: the nodes to keep (with everything they depend on).
        on_error: ``OpError -> exception``, for reads of the variables that fail later.
        signatures: the SignatureDef names it serves, for the error a failure raises.

    Returns:
        ``(graph_def, weights, values)``: each variable (``VariableV2`` or resource) becomes a
        stand-in constant named like the variable, ``weights`` maps it to that same checkpoint
        name and ``values`` that name to its :class:`~.weights.SessionVariableValue`.
    """
    import_tensorflow()
    from tensorflow.python.framework import convert_to_constants

    check_constants_fit(sess.graph)
    _, session_stand_ins = _converter_classes()
    graph_def = sess.graph.as_graph_def()
    converter_data = session_stand_ins(sess, graph_def, list(output_node_names), on_error)
    with pipeline_stage("freeze", signatures):
        frozen, _ = convert_to_constants._replace_variables_by_constants(converter_data=converter_data)
    weights = {name: name for name in converter_data.values}
    return frozen, weights, dict(converter_data.values)


def check_constants_fit(graph, limit=GRAPH_CONSTANTS_LIMIT):
    """Refuses a graph whose own ``Const`` nodes cannot fit in one ``GraphDef``.

    Variables never count (they are stand-ins); constants the program wrote into the graph
    (``tf.constant(array)``, numpy arrays used inside a traced function) do. Sizes come from
    the output shapes first, which costs nothing; only when those add up to more than
    ``limit`` are the large constants measured exactly (a constant may be a one-element splat).
    """
    tf = import_tensorflow()
    estimates = []
    for op in graph.get_operations():
        if op.type != "Const":
            continue
        output = op.outputs[0]
        n = output.shape.num_elements()
        if n:
            itemsize = 1 if output.dtype == tf.string else output.dtype.size
            estimates.append((n * itemsize, op))
    remaining = sum(size for size, _ in estimates)
    if remaining <= limit:
        return
    # Largest first, measured until the answer is known: each measurement copies the constant.
    estimates.sort(key=lambda item: -item[0])
    total = 0
    for i, (size, op) in enumerate(estimates):
        remaining -= size
        if size >= _EXACT_SIZE_FROM:
            estimates[i] = size, op = op.get_attr("value").ByteSize(), op
        total += size
        if total > limit or total + remaining <= limit:
            break
    if total + remaining <= limit:
        return
    from mlflow_eas_savedmodel.tensor_bundle import format_bytes

    total += remaining  # the constants not measured count at their estimate
    largest = sorted(estimates, key=lambda item: -item[0])[:5]
    listed = ", ".join(
        f"{op.name!r} ({format_bytes(size)}, {op.outputs[0].dtype.name} {op.outputs[0].shape.as_list()})"
        for size, op in largest
    )
    raise invalid_parameter_value(
        f"The model's graph holds {format_bytes(total)} of constants (not variables), more than "
        f"the 2 GiB one GraphDef (a protobuf message) can hold. The largest: {listed}. Make "
        "them variables so their values are written to variables/ instead of the graph: "
        "`tf.Variable(value, trainable=False)` (TF1: `tf.compat.v1.get_variable(name, "
        "initializer=value, trainable=False)`; Keras: `self.add_weight(shape=value.shape, "
        "trainable=False)` then `.assign(value)`) instead of `tf.constant(value)` or a numpy "
        "array used inside the model's call."
    )
