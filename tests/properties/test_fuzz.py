"""Fuzzed input decoders: every input either predicts (correctly) or raises ``MlflowException``.

``hypothesis`` drives a fixed number of examples per decoder (derandomized, so CI runs the same
ones): numpy arrays of every dtype and shape (0-d, empty, huge zero-size dims, NaN/inf), ragged
and wrongly nested lists, object arrays of mixed types, dicts with wrong/extra/non-string keys,
DataFrames, JSON bodies through MLflow's scoring-server parser, and EAS protobuf bodies.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from mlflow.exceptions import MlflowException
from support.multi_signature import WEIGHTS

import mlflow_eas_savedmodel as mes

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
INPUT_KEYS = {"serving_default": ["image"], "pair": ["a", "b"], "words": ["words"], "anything": ["anything"]}
SIGNATURES = list(INPUT_KEYS)
ALL_KEYS = sorted({k for keys in INPUT_KEYS.values() for k in keys})


@pytest.fixture(scope="module")
def handle(multi_signature_model):
    """``tests/support/multi_signature.py``'s ``DECODER_MODEL``: float, float+int32 (two outputs), string
    and unknown-rank inputs."""
    return mes.load_model(str(multi_signature_model), device="cpu")


@pytest.fixture(scope="module")
def wrapper(multi_signature_model):
    from mlflow_eas_savedmodel.pyfunc import _load_pyfunc

    return _load_pyfunc(str(multi_signature_model / "savedmodel"), {"device": "cpu"})


@pytest.fixture(scope="module")
def pyfunc_model(multi_signature_model):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(multi_signature_model), model_config={"device": "cpu"})


# ---- strategies --------------------------------------------------------------------------

NUMERIC = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint32",
           "uint64", "bool", "complex64"]
OTHER = ["U4", "S4", "datetime64[s]", "timedelta64[ms]"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4), st.binary(max_size=4),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
)
nested = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=2), inner, max_size=2)),
    max_leaves=12,
)


def _object_array(items):
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):  # element-wise: keeps lists as elements, never broadcasts
        array[i] = item
    return array


any_arrays = hnp.arrays(
    st.sampled_from(NUMERIC + OTHER),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
)
# Arrays of the right rank and width for some input, in any dtype: they reach TensorFlow.
fitting_arrays = st.tuples(st.integers(0, 4), st.sampled_from([(4,), (2,), ()]), st.sampled_from(NUMERIC + OTHER)).flatmap(
    lambda t: hnp.arrays(np.dtype(t[2]), (t[0],) + t[1])
)
huge = st.sampled_from(
    [
        lambda: np.empty((0, 10**9), np.float32),
        lambda: np.empty((10**9, 0), np.float32),
        lambda: np.broadcast_to(np.float32(1.5), (2**15, 4)),
        lambda: np.full((3, 4), np.nan, np.float32),
        lambda: np.full((3,), 2**40, np.int64),
        lambda: np.full((3,), -(2**31) - 1, np.int64),
        lambda: np.full((3,), 2**64 - 1, np.uint64),
        lambda: np.array(np.float32(7)),
        lambda: np.array("word"),
        lambda: np.array([b"a\xff", "b\u00e9", b""], dtype=object),
    ]
).map(lambda make: make())
small_values = st.one_of(
    any_arrays, fitting_arrays, fitting_arrays, nested, st.lists(nested, max_size=5).map(_object_array)
)
values = st.one_of(small_values, huge)
keys = st.one_of(st.sampled_from(ALL_KEYS), st.text(max_size=3), st.integers(-2, 2))


def _inputs(values):
    return st.one_of(
        values,
        st.dictionaries(keys, values, max_size=3),
        st.sampled_from(SIGNATURES).flatmap(
            lambda sig: st.fixed_dictionaries({k: st.one_of(fitting_arrays, values) for k in INPUT_KEYS[sig]})
        ),
    )


inputs = _inputs(values)
# JSON bodies hold no zero-size arrays with 10**9-long dims: as JSON they would be 10**9 lists.
json_inputs = _inputs(small_values)
signature_names = st.one_of(
    st.sampled_from(SIGNATURES), st.sampled_from(SIGNATURES), st.none(), st.text(max_size=6),
    st.integers(), st.lists(st.text(max_size=2), max_size=2),
)

# Trailing shape of each input (None: any rank); batch size is shared within a request.
TRAILING = {"image": (4,), "a": (2,), "b": (), "words": (), "anything": None}


@st.composite
def plausible(draw):
    """``(inputs, signature)`` with the right keys and ranks, any numeric dtype and values:
    most of these predict, so the oracle gets checked on many of them."""
    signature = draw(st.sampled_from(SIGNATURES))
    batch = draw(st.integers(0, 4))
    feeds = {}
    for key in INPUT_KEYS[signature]:
        trailing = TRAILING[key]
        shape = (
            draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
            if trailing is None
            else (batch,) + trailing
        )
        if key == "words":
            dtype = draw(st.sampled_from(["U3", "S3", "O"]))
            elements = st.text(max_size=3) if dtype == "O" else None
            feeds[key] = draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))
        else:
            feeds[key] = draw(hnp.arrays(np.dtype(draw(st.sampled_from(NUMERIC))), shape))
    if len(feeds) == 1 and draw(st.booleans()):
        return feeds[INPUT_KEYS[signature][0]], signature
    return feeds, signature


cases = st.one_of(plausible(), st.tuples(inputs, signature_names))


@st.composite
def dataframes(draw):
    rows = draw(st.integers(0, 4))
    columns = draw(st.lists(st.one_of(st.sampled_from(ALL_KEYS), st.text(max_size=3)), min_size=1, max_size=3, unique=True))
    cell = st.one_of(
        scalars,
        st.lists(st.floats(allow_nan=True, width=32), min_size=0, max_size=5),
        st.integers(0, 5).map(lambda n: np.arange(n, dtype=np.float32)),
    )
    return pd.DataFrame({c: pd.Series([draw(cell) for _ in range(rows)], dtype=object) for c in columns})


# ---- oracle ------------------------------------------------------------------------------


def _expected(signature, feeds):
    """What a correct model returns for the inputs it accepted, computed with numpy."""
    if signature == "serving_default":
        x = np.asarray(feeds["image"]).astype(np.float32)
        return {"scores": x @ WEIGHTS}
    if signature == "pair":
        a = np.asarray(feeds["a"]).astype(np.float32)
        b = np.asarray(feeds["b"])
        return {"total": a.sum(axis=1, dtype=np.float32) + b.astype(np.float32), "doubled": a * 2}
    if signature == "words":
        words = np.asarray(feeds["words"], dtype=object).reshape(-1)
        return {"length": np.array([len(w.encode() if isinstance(w, str) else w) for w in words], np.int32)}
    return {"sum": np.asarray(feeds["anything"]).astype(np.float32).sum(dtype=np.float64)}


def _check_outputs(signature, feeds, outputs):
    expected = _expected(signature, feeds)
    assert sorted(outputs) == sorted(expected)
    for key, want in expected.items():
        got = np.asarray(outputs[key])
        assert got.shape == np.shape(want), (key, got.shape, np.shape(want))
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3, equal_nan=True, err_msg=key)


def _feeds(signature, data):
    if isinstance(data, dict):
        return data
    return {INPUT_KEYS[signature][0]: data}


# ---- properties --------------------------------------------------------------------------


@FUZZ
@given(case=cases)
def test_handle_predict_is_correct_or_an_mlflow_exception(handle, case):
    data, signature = case
    try:
        outputs = handle.predict(data, signature_name=signature)
    except MlflowException as e:
        event(f"rejected: {e.message[:28]}")
        return
    event("predicted")
    name = signature or handle.default_signature
    _check_outputs(name, _feeds(name, data), outputs)


@FUZZ
@given(
    case=st.one_of(
        cases,
        st.tuples(st.one_of(dataframes(), scalars, st.sets(st.integers(), max_size=3)), signature_names),
        plausible().map(lambda c: (pd.DataFrame({k: list(v) for k, v in c[0].items()}) if isinstance(c[0], dict) and all(np.ndim(v) >= 1 for v in c[0].values()) else c[0], c[1])),
    )
)
def test_pyfunc_predict_returns_arrays_or_an_mlflow_exception(wrapper, case):
    data, signature = case
    try:
        result = wrapper.predict(data, params={"signature_name": signature})
    except MlflowException as e:
        event(f"rejected: {e.message[:28]}")
        return
    event("predicted")
    outputs = result if isinstance(result, dict) else {"only": result}
    assert all(isinstance(v, (np.ndarray, np.generic)) for v in outputs.values())
    name = signature or wrapper.signature_name
    if not isinstance(data, (pd.DataFrame, set)) and np.ndim(data) >= 0:
        if isinstance(result, dict):
            _check_outputs(name, _feeds(name, data), result)


def _json_safe(value):
    """JSON-encodable version of a drawn value (bytes as latin-1 text, complex as pairs)."""
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, (np.generic,)):
        return _json_safe(value.item())
    if isinstance(value, int) and abs(value) > 2**63:
        return float(value)
    return value


@st.composite
def json_bodies(draw):
    kind = draw(st.sampled_from(["inputs", "instances", "dataframe_split", "dataframe_records", "garbage", "raw"]))
    if kind == "garbage":
        return draw(st.one_of(st.binary(max_size=64), st.text(max_size=64)))
    if kind == "raw":
        return json.dumps(_json_safe(draw(nested)))
    if kind in ("inputs", "instances"):
        payload = {kind: _json_safe(draw(st.one_of(json_inputs, nested)))}
        if draw(st.integers(0, 2)):
            feeds, signature = draw(plausible())
            payload = {kind: _json_safe(feeds), "params": {"signature_name": signature}}
    elif kind == "dataframe_split":
        df = draw(dataframes())
        payload = {kind: {"columns": [str(c) for c in df.columns], "data": _json_safe(df.to_numpy().tolist())}}
        if draw(st.booleans()):
            payload[kind]["data"] = _json_safe(draw(nested))
    else:
        payload = {kind: _json_safe(draw(st.lists(st.dictionaries(st.sampled_from(ALL_KEYS), nested, max_size=2), max_size=3)))}
    if "params" not in payload and draw(st.booleans()):
        payload["params"] = {"signature_name": _json_safe(draw(signature_names))}
    body = json.dumps(payload, default=str)  # datetimes from datetime64 arrays
    if draw(st.integers(0, 9)) == 0:
        body = body[: draw(st.integers(0, len(body)))]  # truncated request
    return body


@FUZZ
@given(body=json_bodies())
def test_scoring_server_json_parses_and_predicts_or_raises_mlflow_exception(pyfunc_model, body):
    from mlflow.pyfunc import scoring_server

    schema = pyfunc_model.metadata.get_input_schema()
    try:
        parsed = scoring_server._parse_json_data(body, pyfunc_model.metadata, schema)
        result = pyfunc_model.predict(parsed.data, params=parsed.params)
        out = scoring_server.StringIO()
        scoring_server.predictions_to_json(result, out)
    except MlflowException as e:
        event(f"rejected: {e.message[:28]}")
        return
    event("predicted")
    assert out.getvalue()


@st.composite
def eas_bodies(draw):
    from mlflow_eas_savedmodel.eas import protocol

    kind = draw(st.sampled_from(["plausible", "plausible", "structured", "structured", "valid_truncated", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=128))
    if kind == "plausible":
        feeds, signature = draw(plausible())
        if not isinstance(feeds, dict):
            feeds = {INPUT_KEYS[signature][0]: feeds}
        # The wire has no float16/uint32/uint64/complex: send those as float64.
        wire = {
            k: v.astype(np.float64) if v.dtype.name in ("float16", "uint32", "uint64", "complex64") else v
            for k, v in feeds.items()
        }
        return protocol.encode_request(wire, signature_name=signature)
    request = protocol.PredictRequest()
    signature = draw(st.one_of(st.sampled_from(SIGNATURES), st.text(max_size=4)))
    if signature:
        request.signature_name = signature
    for key in draw(st.lists(st.one_of(st.sampled_from(ALL_KEYS), st.text(max_size=3)), max_size=3, unique=True)):
        proto = request.inputs[key]
        proto.dtype = draw(st.integers(0, 25))
        proto.array_shape.dim.extend(draw(st.lists(st.one_of(st.integers(0, 4), st.integers(-3, 2**62)), max_size=4)))
        field = draw(st.sampled_from(["float_val", "double_val", "int_val", "int64_val", "bool_val", "string_val"]))
        n = draw(st.integers(0, 9))
        if field in ("float_val", "double_val"):
            getattr(proto, field).extend(draw(st.lists(st.floats(width=32), min_size=n, max_size=n)))
        elif field == "int_val":
            proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=n, max_size=n)))
        elif field == "int64_val":
            proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)))
        elif field == "bool_val":
            proto.bool_val.extend(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        else:
            proto.string_val.extend(draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n)))
    request.output_filter.extend(draw(st.lists(st.one_of(st.sampled_from(["scores", "total", "sum"]), st.text(max_size=3)), max_size=2)))
    body = request.SerializeToString()
    if kind == "valid_truncated" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    return body


@pytest.fixture(scope="module")
def eas_endpoint(handle):
    from mlflow_eas_savedmodel.eas.endpoint import EasEndpoint

    endpoint = EasEndpoint(handle, "fuzz")
    yield endpoint
    endpoint.close()


@FUZZ
@given(body=eas_bodies())
def test_eas_protobuf_decodes_and_predicts_or_raises_mlflow_exception(eas_endpoint, body):
    from mlflow_eas_savedmodel.eas import protocol

    try:
        answer = eas_endpoint.predict_bytes(body)
    except MlflowException as e:
        event(f"rejected: {e.message[:28]}")
        return
    event("predicted")
    outputs = protocol.decode_response(answer)
    assert outputs and all(isinstance(v, np.ndarray) for v in outputs.values())


def test_the_fuzzer_reaches_tensorflow(handle):
    """Guards the strategies: well-formed cases do predict (the properties are not vacuous)."""
    ok = handle.predict({"a": np.ones((3, 2), np.float64), "b": np.arange(3, dtype=np.uint8)}, "pair")
    _check_outputs("pair", {"a": np.ones((3, 2)), "b": np.arange(3)}, ok)
    assert math.isnan(float(handle.predict(np.array([1.0, np.nan], np.float32), "anything")["sum"]))
