"""EAS's TensorFlow-processor protobuf: our messages against the official eas-prediction client."""

import base64

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from mlflow_eas_savedmodel.eas import protocol
from mlflow_eas_savedmodel.eas.official_client import run_client_ops

RNG = np.random.default_rng(7)
CASES = {
    "float32": RNG.standard_normal((2, 3)).astype(np.float32),
    "float64": RNG.standard_normal((4,)),
    "int32": np.array([[-(2**31), 0, 2**31 - 1]], np.int32),
    "int16": np.array([-7, 300], np.int16),
    "int8": np.array([-128, 127], np.int8),
    "uint8": np.array([[0, 255]], np.uint8),
    "uint16": np.array([65535], np.uint16),
    "int64": np.array([-(2**62), 2**62 + 5], np.int64),
    "bool": np.array([[True, False], [False, True]]),
    "string": np.array([b"a", "caf\u00e9".encode(), b"", b"\x00\xff"], dtype=object).reshape(2, 2),
    "empty": np.zeros((0, 3), np.float32),
    "scalar": np.float32(2.5),
}
CODES = {"float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6, "string": 7,
         "int64": 9, "bool": 10, "uint16": 17, "empty": 1, "scalar": 1}


def _client_feed(name, array):
    array = np.asarray(array)
    values = array.reshape(-1).tolist()
    if CODES[name] == 7:
        values = [base64.b64encode(v).decode() for v in values]
    return [name, list(array.shape), CODES[name], values]


def _from_client_json(tensor):
    values = tensor["values"]
    if tensor["dtype"] == 7:
        values = [base64.b64decode(v) for v in values]
    return values, tensor["shape"], tensor["dtype"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_keeps_values_dtype_and_shape(name):
    value = CASES[name]
    signature, inputs, output_filter = protocol.decode_request(
        protocol.encode_request({"t": value}, signature_name="sig", output_filter=["out"])
    )
    assert (signature, output_filter) == ("sig", ["out"])
    got = inputs["t"]
    want = np.asarray(value)
    assert got.shape == want.shape
    assert got.dtype == (np.dtype(object) if name == "string" else want.dtype)
    np.testing.assert_array_equal(got, want)
    back = protocol.decode_response(protocol.encode_response({"t": value}))["t"]
    np.testing.assert_array_equal(back, want)


def test_requests_are_byte_identical_to_the_official_client():
    """One input per request: no map-order freedom, so the bytes themselves must match."""
    names = sorted(CASES)
    ops = [
        {"op": "encode", "signature_name": f"sig_{n}", "feeds": [_client_feed(n, CASES[n])], "fetches": ["a", "b"]}
        for n in names
    ]
    theirs = run_client_ops(ops)
    for name, data in zip(names, theirs):
        ours = protocol.encode_request({name: CASES[name]}, signature_name=f"sig_{name}", output_filter=["a", "b"])
        assert base64.b64decode(data) == ours, name


def test_multi_input_messages_parse_both_ways():
    feeds = {n: CASES[n] for n in ("float32", "int64", "string", "bool")}
    theirs = run_client_ops(
        [{"op": "encode", "signature_name": "multi", "feeds": [_client_feed(n, v) for n, v in feeds.items()], "fetches": ["y"]}]
    )[0]
    signature, inputs, output_filter = protocol.decode_request(base64.b64decode(theirs))
    assert (signature, output_filter, sorted(inputs)) == ("multi", ["y"], sorted(feeds))
    for key, value in feeds.items():
        np.testing.assert_array_equal(inputs[key], value)

    ours_request = protocol.encode_request(feeds, signature_name="multi", output_filter=["y"])
    ours_response = protocol.encode_response(feeds)
    parsed_request, parsed_response = run_client_ops(
        [{"op": "parse_request", "data": base64.b64encode(ours_request).decode()},
         {"op": "parse_response", "data": base64.b64encode(ours_response).decode()}]
    )
    assert parsed_request["signature_name"] == "multi" and parsed_request["output_filter"] == ["y"]
    for parsed in (parsed_request["inputs"], parsed_response):
        for key, value in feeds.items():
            values, shape, dtype = _from_client_json(parsed[key])
            assert dtype == CODES[key] and shape == list(value.shape)
            np.testing.assert_array_equal(np.array(values, dtype=value.dtype).reshape(shape), value)


def test_signature_dtypes_cast_plain_lists():
    body = protocol.encode_request({"x": [[1, 2]], "s": ["a"]}, dtypes={"x": "float32", "s": "string"})
    _, inputs, _ = protocol.decode_request(body)
    assert inputs["x"].dtype == np.float32 and inputs["s"].tolist() == [b"a"]
    assert protocol.data_type_name("float32") == "DT_FLOAT"
    assert protocol.data_type_name("string") == "DT_STRING"
    assert protocol.data_type_name("float16") == "DT_HALF"


def test_errors_say_what_to_fix():
    with pytest.raises(MlflowException, match=r"cannot carry float16 values .* Cast the array first"):
        protocol.encode_request({"x": np.zeros(2, np.float16)})
    with pytest.raises(MlflowException, match=r"cannot carry uint64 values"):
        protocol.encode_request({"x": np.zeros(2, np.uint64)})

    bad_count = protocol.PredictRequest()
    bad_count.inputs["x"].dtype = protocol.DT_FLOAT
    bad_count.inputs["x"].array_shape.dim.extend([2, 2])
    bad_count.inputs["x"].float_val.extend([1.0, 2.0, 3.0])
    with pytest.raises(MlflowException, match=r"'x' has array_shape \[2, 2\] \(4 values\) but carries 3 values in float_val"):
        protocol.decode_request(bad_count.SerializeToString())

    half = protocol.PredictRequest()
    half.inputs["h"].dtype = protocol.DATA_TYPES["DT_HALF"]
    with pytest.raises(MlflowException, match=r"'h' has dtype DT_HALF, which EAS's TensorFlow protocol cannot carry"):
        protocol.decode_request(half.SerializeToString())

    negative = protocol.PredictRequest()
    negative.inputs["n"].dtype = protocol.DT_FLOAT
    negative.inputs["n"].array_shape.dim.extend([-1])
    with pytest.raises(MlflowException, match=r"'n' has a negative dimension in array_shape \[-1\]"):
        protocol.decode_request(negative.SerializeToString())

    with pytest.raises(MlflowException, match="The body is not a serialized EAS PredictRequest"):
        protocol.decode_request(b"\xff\xff\xff\xff")
    with pytest.raises(MlflowException, match="The body is not a serialized EAS PredictResponse"):
        protocol.decode_response(b"\x0a\xff")


def test_a_shape_whose_size_overflows_int64_is_refused_not_wrapped():
    huge = protocol.PredictRequest()
    huge.inputs["x"].dtype = protocol.DT_FLOAT
    huge.inputs["x"].array_shape.dim.extend([2**62, 4])  # 2**64 values: wraps to 0 in int64
    with pytest.raises(MlflowException, match=r"'x' has array_shape \[4611686018427387904, 4\] \(18446744073709551616 values\) but carries 0 values"):
        protocol.decode_request(huge.SerializeToString())


def test_an_empty_array_numpy_cannot_shape_is_refused():
    """Found by the fuzzer: zero values, but the other dimensions overflow numpy's size."""
    body = b"\n\x0fserving_default\x12\x16\n\x01a\x12\x11\x08\x01\x12\r\n\x0b\x00\x8c\xc4\x89\xd4\x05\xa8\xa2\x8a\xd4\x05"
    with pytest.raises(MlflowException, match=r"'a' has array_shape \[0, \d+, \d+\], which numpy cannot hold"):
        protocol.decode_request(body)
