"""EAS's TensorFlow-processor protocol: ``PredictRequest`` in, ``PredictResponse`` out.

The messages are those of the official ``eas-prediction`` client (``tf_request.proto``, package
``""``, verified against ``eas_prediction/tf_request_pb2.py`` of eas-prediction 0.36)::

    enum ArrayDataType { DT_INVALID = 0; DT_FLOAT = 1; ... DT_VARIANT = 21; }  // TF's numbering
    message ArrayShape { repeated int64 dim = 1 [packed = true]; }
    message ArrayProto {
      ArrayDataType dtype = 1;   ArrayShape array_shape = 2;
      repeated float float_val = 3 [packed = true];   repeated double double_val = 4 [packed = true];
      repeated int32 int_val = 5 [packed = true];     repeated bytes string_val = 6;
      repeated int64 int64_val = 7 [packed = true];   repeated bool bool_val = 8 [packed = true];
    }
    message PredictRequest {
      string signature_name = 1; map<string, ArrayProto> inputs = 2;
      repeated string output_filter = 3;
    }
    message PredictResponse { map<string, ArrayProto> outputs = 1; }

Values are flattened in C order; ``int_val`` carries int8/int16/int32/uint8/uint16 (as the
client does). The classes are built from a ``FileDescriptorProto`` at import, in a private
descriptor pool (no generated code, no clash with other ``tf_request.proto`` users), so any
protobuf runtime works. This module does not import TensorFlow.
"""

import math

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from mlflow_eas_savedmodel.errors import invalid_parameter_value

# TensorFlow's DataType numbering, as the client's ArrayDataType enum spells it.
DATA_TYPES = {
    "DT_INVALID": 0, "DT_FLOAT": 1, "DT_DOUBLE": 2, "DT_INT32": 3, "DT_UINT8": 4,
    "DT_INT16": 5, "DT_INT8": 6, "DT_STRING": 7, "DT_COMPLEX64": 8, "DT_INT64": 9,
    "DT_BOOL": 10, "DT_QINT8": 11, "DT_QUINT8": 12, "DT_QINT32": 13, "DT_BFLOAT16": 14,
    "DT_QINT16": 15, "DT_QUINT16": 16, "DT_UINT16": 17, "DT_COMPLEX128": 18, "DT_HALF": 19,
    "DT_RESOURCE": 20, "DT_VARIANT": 21,
}
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8 = 1, 2, 3, 4, 5, 6
DT_STRING, DT_INT64, DT_BOOL, DT_UINT16 = 7, 9, 10, 17
_DATA_TYPE_NAMES = {v: k for k, v in DATA_TYPES.items()}

# dtype code -> (numpy dtype, ArrayProto field); the types the client can carry.
WIRE = {
    DT_FLOAT: (np.dtype(np.float32), "float_val"),
    DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    DT_INT32: (np.dtype(np.int32), "int_val"),
    DT_INT16: (np.dtype(np.int16), "int_val"),
    DT_INT8: (np.dtype(np.int8), "int_val"),
    DT_UINT8: (np.dtype(np.uint8), "int_val"),
    DT_UINT16: (np.dtype(np.uint16), "int_val"),
    DT_INT64: (np.dtype(np.int64), "int64_val"),
    DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    DT_STRING: (np.dtype(object), "string_val"),
}
_CODE_OF_NUMPY = {dtype: code for code, (dtype, _) in WIRE.items() if dtype.kind != "O"}
# TensorFlow dtype names (as the MLmodel metadata records them) -> ArrayDataType names.
_TF_NAME_TO_DT = {
    "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int32": "DT_INT32", "uint8": "DT_UINT8",
    "int16": "DT_INT16", "int8": "DT_INT8", "string": "DT_STRING", "complex64": "DT_COMPLEX64",
    "int64": "DT_INT64", "bool": "DT_BOOL", "qint8": "DT_QINT8", "quint8": "DT_QUINT8",
    "qint32": "DT_QINT32", "bfloat16": "DT_BFLOAT16", "qint16": "DT_QINT16",
    "quint16": "DT_QUINT16", "uint16": "DT_UINT16", "complex128": "DT_COMPLEX128",
    "float16": "DT_HALF", "half": "DT_HALF", "resource": "DT_RESOURCE", "variant": "DT_VARIANT",
}


def file_descriptor():
    """EAS's ``tf_request.proto`` as a ``FileDescriptorProto``; ``_local_server.py`` gets it too."""
    f = descriptor_pb2.FileDescriptorProto(name="tf_request.proto", package="", syntax="proto3")
    enum = f.enum_type.add(name="ArrayDataType")
    for name, number in DATA_TYPES.items():
        enum.value.add(name=name, number=number)
    Field = descriptor_pb2.FieldDescriptorProto

    def field(msg, name, number, ftype, label=Field.LABEL_OPTIONAL, type_name=None, packed=False):
        fd = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            fd.type_name = type_name
        if packed:
            fd.options.packed = True

    shape = f.message_type.add(name="ArrayShape")
    field(shape, "dim", 1, Field.TYPE_INT64, Field.LABEL_REPEATED, packed=True)
    array = f.message_type.add(name="ArrayProto")
    field(array, "dtype", 1, Field.TYPE_ENUM, type_name=".ArrayDataType")
    field(array, "array_shape", 2, Field.TYPE_MESSAGE, type_name=".ArrayShape")
    field(array, "float_val", 3, Field.TYPE_FLOAT, Field.LABEL_REPEATED, packed=True)
    field(array, "double_val", 4, Field.TYPE_DOUBLE, Field.LABEL_REPEATED, packed=True)
    field(array, "int_val", 5, Field.TYPE_INT32, Field.LABEL_REPEATED, packed=True)
    field(array, "string_val", 6, Field.TYPE_BYTES, Field.LABEL_REPEATED)
    field(array, "int64_val", 7, Field.TYPE_INT64, Field.LABEL_REPEATED, packed=True)
    field(array, "bool_val", 8, Field.TYPE_BOOL, Field.LABEL_REPEATED, packed=True)

    def map_message(parent, entry_name, field_name, number):
        entry = parent.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        field(entry, "key", 1, Field.TYPE_STRING)
        field(entry, "value", 2, Field.TYPE_MESSAGE, type_name=".ArrayProto")
        field(parent, field_name, number, Field.TYPE_MESSAGE, Field.LABEL_REPEATED,
              type_name=f".{parent.name}.{entry_name}")

    request = f.message_type.add(name="PredictRequest")
    field(request, "signature_name", 1, Field.TYPE_STRING)
    map_message(request, "InputsEntry", "inputs", 2)
    field(request, "output_filter", 3, Field.TYPE_STRING, Field.LABEL_REPEATED)
    response = f.message_type.add(name="PredictResponse")
    map_message(response, "OutputsEntry", "outputs", 1)
    return f


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(file_descriptor())
ArrayShape = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("ArrayShape"))
ArrayProto = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("ArrayProto"))
PredictRequest = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("PredictRequest"))
PredictResponse = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("PredictResponse"))


def data_type_name(tf_dtype_name):
    """``"float32"`` -> ``"DT_FLOAT"``: the name EAS shows for a TensorFlow dtype."""
    return _TF_NAME_TO_DT.get(tf_dtype_name, "DT_INVALID")


def _as_wire_array(value, dtype_code=None):
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if dtype_code is None:
        if array.dtype.kind in "OSU":
            dtype_code = DT_STRING
        elif array.dtype in _CODE_OF_NUMPY:
            dtype_code = _CODE_OF_NUMPY[array.dtype]
        else:
            raise invalid_parameter_value(
                f"EAS's TensorFlow protocol cannot carry {array.dtype} values (it has float32, "
                "float64, int8/16/32/64, uint8/16, bool and string). Cast the array first, "
                "e.g. x.astype('float32')."
            )
    if dtype_code not in WIRE:
        raise invalid_parameter_value(
            f"EAS's TensorFlow protocol has no value field for {_DATA_TYPE_NAMES.get(dtype_code, dtype_code)}."
        )
    return array, dtype_code


def encode_array(value, dtype_code=None, out=None):
    """A numpy array (or array-like) as an ``ArrayProto`` (into ``out`` if given)."""
    array, code = _as_wire_array(value, dtype_code)
    proto = ArrayProto() if out is None else out
    proto.dtype = code
    proto.array_shape.dim.extend(int(d) for d in array.shape)
    wire_dtype, field = WIRE[code]
    flat = array.reshape(-1)
    if code == DT_STRING:
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat.tolist()
        )
    else:
        getattr(proto, field).extend(flat.astype(wire_dtype, copy=False).tolist())
    return proto


def decode_array(proto, name="tensor"):
    """An ``ArrayProto`` as a numpy array (strings as an object array of ``bytes``)."""
    if proto.dtype not in WIRE:
        raise invalid_parameter_value(
            f"{name!r} has dtype {_DATA_TYPE_NAMES.get(proto.dtype, proto.dtype)}, which EAS's "
            f"TensorFlow protocol cannot carry; use one of {[_DATA_TYPE_NAMES[c] for c in WIRE]}."
        )
    dtype, field = WIRE[proto.dtype]
    shape = tuple(int(d) for d in proto.array_shape.dim)
    if any(d < 0 for d in shape):
        raise invalid_parameter_value(
            f"{name!r} has a negative dimension in array_shape {list(shape)}."
        )
    values = getattr(proto, field)
    size = math.prod(shape)  # Python ints: a huge shape must not wrap to a small count
    if len(values) != size:
        raise invalid_parameter_value(
            f"{name!r} has array_shape {list(shape)} ({size} values) but carries {len(values)} "
            f"values in {field}. Send the values flattened in C order, as many as the shape holds."
        )
    try:
        if dtype.kind == "O":
            array = np.empty(size, dtype=object)
            array[:] = list(values)
            return array.reshape(shape)
        return np.array(values, dtype=dtype).reshape(shape)
    except ValueError as e:
        # An empty array whose other dimensions multiply past what numpy can address
        # (e.g. [0, 1518494220, 1518506280]) has the right value count but no valid shape.
        raise invalid_parameter_value(
            f"{name!r} has array_shape {list(shape)}, which numpy cannot hold ({e}). Send a "
            "shape whose dimensions multiply to a size that fits in memory."
        ) from e


def encode_request(inputs, signature_name=None, output_filter=None, dtypes=None):
    """Serialized ``PredictRequest`` bytes for ``{key: array}`` inputs.

    Args:
        inputs: ``{input key: array-like}``.
        signature_name: the SignatureDef to run (empty: the service's default).
        output_filter: output keys to return (empty: all).
        dtypes: optional ``{key: TensorFlow dtype name}`` to cast each input to (e.g. the
            signature's recorded dtypes), so that ``[[1, 2]]`` goes out as float32 when the
            signature takes float32.

    Example:
        >>> import numpy as np
        >>> from mlflow_eas_savedmodel.eas.protocol import decode_request, encode_request
        >>> body = encode_request({"image": np.ones((2, 4), "float32")}, signature_name="scores")
        >>> signature_name, inputs, output_keys = decode_request(body)
        >>> signature_name, inputs["image"].shape, output_keys
        ('scores', (2, 4), [])
    """
    return build_request(inputs, signature_name, output_filter, dtypes).SerializeToString()


def build_request(inputs, signature_name=None, output_filter=None, dtypes=None):
    """The ``PredictRequest`` message of :func:`encode_request`."""
    request = PredictRequest()
    if signature_name:
        request.signature_name = signature_name
    for key in sorted(inputs):
        code = None
        if dtypes and key in dtypes:
            code = DATA_TYPES.get(data_type_name(dtypes[key]))
        value = inputs[key]
        if code is not None and code != DT_STRING and code in WIRE:
            value = np.asarray(value).astype(WIRE[code][0], copy=False)
        encode_array(value, code, out=request.inputs[key])
    request.output_filter.extend(output_filter or [])
    return request


def decode_request(body):
    """``(signature_name or None, {key: numpy array}, [output keys])`` of request bytes."""
    request = PredictRequest()
    try:
        request.ParseFromString(bytes(body))
    except DecodeError as e:
        raise invalid_parameter_value(
            f"The body is not a serialized EAS PredictRequest ({e}). Send the bytes of "
            "TFRequest.to_string() from eas-prediction, or of encode_request()."
        ) from e
    inputs = {key: decode_array(proto, key) for key, proto in request.inputs.items()}
    return request.signature_name or None, inputs, list(request.output_filter)


def encode_response(outputs):
    """Serialized ``PredictResponse`` bytes for ``{key: numpy array}`` outputs."""
    response = PredictResponse()
    for key in sorted(outputs):
        encode_array(outputs[key], out=response.outputs[key])
    return response.SerializeToString()


def decode_response(body):
    """``{key: numpy array}`` of ``PredictResponse`` bytes."""
    response = PredictResponse()
    try:
        response.ParseFromString(bytes(body))
    except DecodeError as e:
        raise invalid_parameter_value(
            f"The body is not a serialized EAS PredictResponse ({e})."
        ) from e
    return {key: decode_array(proto, key) for key, proto in response.outputs.items()}
