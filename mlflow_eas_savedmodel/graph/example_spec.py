"""The ``tf.Example`` features a string input is parsed into, and valid examples to feed it.

Estimator-era SavedModels (``build_parsing_serving_input_receiver_fn``, every ``classify`` and
``regress`` SignatureDef) take serialized ``tf.train.Example`` protos: short random strings fail
in the parse op instead of testing the model. The feature spec is in the graph itself, in the
attrs and constant inputs of the ``ParseExample`` (TF 1.x), ``ParseExampleV2`` (TF 1.15+/2.x)
or ``ParseSingleExample`` node that reads the input, so valid examples can be built from it.
"""

import numpy as np

PARSE_OPS = ("ParseExample", "ParseExampleV2", "ParseSingleExample")
# Ops a serialized-example tensor flows through on its way to the parse op.
_PASS_THROUGH = ("Identity", "StridedSlice", "Reshape", "ExpandDims", "Squeeze", "Slice", "Gather", "GatherV2")
_WORDS = (b"a", b"bb", b"ccc", b"dddd")


def _consts(graph_def):
    from tensorflow.python.framework import tensor_util

    by_name = {}
    for node in graph_def.node:
        if node.op == "Const":
            by_name[node.name] = node
    return by_name, tensor_util.MakeNdarray


def _strings(value):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(value).reshape(-1).tolist()]


def feature_spec(graph_def, tensor_name):
    """``{feature: (kind, dtype name, shape)}`` parsed from ``tensor_name``, or ``None``.

    ``kind`` is ``"dense"`` (shape given), ``"sparse"`` or ``"ragged"`` (shape ``None``).
    """
    from tensorflow.python.framework import dtypes

    consumers = {}
    for node in graph_def.node:
        for inp in node.input:
            if not inp.startswith("^"):
                consumers.setdefault(inp.split(":")[0], []).append(node)
    consts, to_array = _consts(graph_def)

    def const_strings(name):
        node = consts.get(name.split(":")[0])
        return None if node is None else _strings(to_array(node.attr["value"].tensor))

    pending, seen = [tensor_name.split(":")[0]], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in consumers.get(current, []):
            if node.op in PARSE_OPS and node.input[0].split(":")[0] == current:
                return _spec_of(node, const_strings, dtypes)
            if node.op in _PASS_THROUGH and node.input[0].split(":")[0] == current:
                pending.append(node.name)
    return None


def _shapes(node):
    return [
        None if s.unknown_rank else [d.size for d in s.dim] for s in node.attr["dense_shapes"].list.shape
    ]


def _spec_of(node, const_strings, dtypes):
    def names(types):
        return [dtypes.as_dtype(t).name for t in types]

    spec = {}
    attr = node.attr
    if node.op == "ParseSingleExample":
        sparse_keys = [k.decode() for k in attr["sparse_keys"].list.s]
        dense_keys = [k.decode() for k in attr["dense_keys"].list.s]
        ragged = []
    elif node.op == "ParseExample":
        n_sparse, n_dense = attr["Nsparse"].i, attr["Ndense"].i
        key_inputs = node.input[2 : 2 + n_sparse + n_dense]
        keys = [(const_strings(k) or ["?"])[0] for k in key_inputs]
        sparse_keys, dense_keys, ragged = keys[:n_sparse], keys[n_sparse:], []
    else:  # ParseExampleV2: sparse, dense and ragged keys are 1-D string constants
        sparse_keys = const_strings(node.input[2]) or []
        dense_keys = const_strings(node.input[3]) or []
        ragged = list(zip(const_strings(node.input[4]) or [], names(attr["ragged_value_types"].list.type)))
    for key, dtype in zip(sparse_keys, names(attr["sparse_types"].list.type)):
        spec[key] = ("sparse", dtype, None)
    for key, dtype, shape in zip(dense_keys, names(attr["Tdense"].list.type), _shapes(node)):
        spec[key] = ("dense", dtype, shape)
    for key, dtype in ragged:
        spec[key] = ("ragged", dtype, None)
    return spec


def serialized_examples(spec, shape, seed=0):
    """An object array of ``shape`` holding serialized ``tf.train.Example``\\s that fit ``spec``.

    Numbers are small seeded random values (0 or 1 for integers, so that ids stay in range),
    strings short words; a dense feature of unknown dimensions gets one value per dimension.
    """
    from tensorflow.core.example import example_pb2

    rng = np.random.default_rng(seed)
    count = int(np.prod(shape)) if shape else 1
    out = np.empty(count, dtype=object)
    for i in range(count):
        example = example_pb2.Example()
        for key, (kind, dtype, dims) in sorted(spec.items()):
            size = int(np.prod([d if d and d > 0 else 1 for d in dims])) if kind == "dense" and dims else 1
            if kind != "dense":
                size = 1 + (i % 2)
            feature = example.features.feature[key]
            if dtype == "string":
                feature.bytes_list.value.extend(_WORDS[(i + j) % len(_WORDS)] for j in range(size))
            elif dtype in ("int64", "int32"):
                feature.int64_list.value.extend(int(v) for v in rng.integers(0, 2, size))
            else:
                feature.float_list.value.extend(float(v) for v in rng.random(size).astype(np.float32))
        out[i] = example.SerializeToString()
    return out.reshape(shape)


def signature_example_specs(meta_graph_def):
    """``{signature: {input key: feature spec}}`` for every string input a parse op reads."""
    from tensorflow.python.framework import dtypes

    specs = {}
    for name, signature in meta_graph_def.signature_def.items():
        for key, info in signature.inputs.items():
            if info.dtype == dtypes.string.as_datatype_enum:
                spec = feature_spec(meta_graph_def.graph_def, info.name)
                if spec:
                    specs.setdefault(name, {})[key] = spec
    return specs
