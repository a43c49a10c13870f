"""Lookup tables captured by traced functions, re-created as TF1 table ops.

Freezing turns variables into constants but cannot turn a captured table resource into
anything: the traced graph keeps a resource placeholder. We read the table's contents from the
live object and re-create it as ``HashTableV2`` filled by an ``InitializeTableV2`` init op, which
every EAS runtime has, so no vocabulary file has to travel with the model.
"""

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value


def recreate_tables(graph_def, tables, table_objects):
    """Replaces captured table handles by ``HashTableV2`` + ``InitializeTableV2`` init ops.

    Args:
        graph_def: the frozen graph, edited in place.
        tables: ``(placeholder name, captured handle)`` pairs from :func:`.freeze.freeze_concrete_function`.
        table_objects: ``id(handle)`` -> table object with an ``export()`` method.

    Returns:
        the names of the init ops to run at load.
    """
    tf = import_tensorflow()
    init_ops = []
    by_name = {n.name: n for n in graph_def.node}
    for placeholder, handle in tables:
        table = table_objects.get(id(handle))
        if table is None:
            raise invalid_parameter_value(
                f"The model captures a resource {placeholder!r} that is neither a variable nor a "
                "lookup table this package can export. Only variables and static lookup tables "
                "(StringLookup, IntegerLookup, tf.lookup.StaticHashTable) are supported."
            )
        keys, values = (t.numpy() for t in table.export())
        node = by_name[placeholder]
        node.Clear()
        node.name, node.op = placeholder, "HashTableV2"
        node.attr["key_dtype"].type = tf.as_dtype(keys.dtype).as_datatype_enum
        node.attr["value_dtype"].type = tf.as_dtype(values.dtype).as_datatype_enum
        node.attr["shared_name"].s = b""
        init = graph_def.node.add(name=f"{placeholder}/init")
        initialize_from_constants(
            graph_def, init, placeholder, placeholder, keys, values,
            tf.as_dtype(keys.dtype), tf.as_dtype(values.dtype),
        )
        init_ops.append(init.name)
    return init_ops


def initialize_from_constants(
    graph_def, init_node, table_input, const_prefix, keys, values, key_dtype, value_dtype, control=()
):
    """Makes ``init_node`` an ``InitializeTableV2`` filling ``table_input`` with ``keys`` ->
    ``values``, held by two new ``Const`` nodes ``<const_prefix>/keys`` and ``/values``."""
    tf = import_tensorflow()
    for suffix, array, dtype in (("keys", keys, key_dtype), ("values", values, value_dtype)):
        const = graph_def.node.add(name=f"{const_prefix}/{suffix}", op="Const")
        const.attr["dtype"].type = dtype.as_datatype_enum
        const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array, dtype=dtype))
    name = init_node.name
    init_node.Clear()
    init_node.name, init_node.op = name, "InitializeTableV2"
    init_node.input.extend([table_input, f"{const_prefix}/keys", f"{const_prefix}/values", *control])
    init_node.attr["Tkey"].type = key_dtype.as_datatype_enum
    init_node.attr["Tval"].type = value_dtype.as_datatype_enum
