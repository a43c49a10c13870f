"""Lookup tables captured by traced functions, re-created as TF1 table ops.

Freezing turns variables into constants but cannot turn a captured table resource into
anything: the traced graph keeps a resource placeholder. We read the table's contents from the
live object and re-create it as ``HashTableV2`` filled by an ``InitializeTableV2`` init op, which
every EAS runtime has, so no vocabulary file has to travel with the model.
"""

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid


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
            raise invalid(
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
        for suffix, array in (("keys", keys), ("values", values)):
            const = graph_def.node.add(name=f"{placeholder}/{suffix}", op="Const")
            const.attr["dtype"].type = tf.as_dtype(array.dtype).as_datatype_enum
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array))
        init = graph_def.node.add(
            name=f"{placeholder}/init",
            op="InitializeTableV2",
            input=[placeholder, f"{placeholder}/keys", f"{placeholder}/values"],
        )
        init.attr["Tkey"].type = node.attr["key_dtype"].type
        init.attr["Tval"].type = node.attr["value_dtype"].type
        init_ops.append(init.name)
    return init_ops
