"""Real Keras 3 architectures through the whole pipeline, declared as cases.

Every case runs through one generic round trip: ``save_model`` to a temporary folder,
``mlflow_eas_savedmodel.load_model`` and the plain TF1 loader by tensor names, both compared
with ``model(x, training=False)``; the compatible EAS processors recorded must be exactly the
expected ones (the rewrites widen them, the input-arity check narrows them for while loops).
The ``runtime`` tests run the same artifacts in the official old TensorFlow wheels, proving the
compatible list is not a lie: TF 1.15 and 2.3 by default, every runtime (1.12 included, where
the rewrites matter) with ``MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1``.

Beside Keras models the table holds sources nobody here wrote the graph of: ``keras.applications``
models (``weights=None``) and Estimator-era SavedModels (``tests/support/estimator_models.py``), whose
expected outputs come from the original SavedModel in TF's own TF1 loader.
"""

import dataclasses
import os
from typing import Callable, Tuple

import numpy as np
import pytest
from conftest import runtime_versions
from mlflow.models import Model

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.runtimes import PROCESSORS, RUNTIME_VERSIONS, check_graph

ALL_PROCESSORS = list(PROCESSORS)
NOT_1_12 = [p for p, v in PROCESSORS.items() if v != "1.12"]
FROM_2_3 = [p for p, v in PROCESSORS.items() if v not in ("1.12", "1.14", "1.15")]
# float32 within 1e-5 relative (plus a tiny absolute slack for outputs near zero).
RTOL, ATOL = 1e-5, 1e-6


@dataclasses.dataclass
class Case:
    """One architecture: how to build it and what the export must say about it."""

    name: str
    build: Callable[[], Tuple[object, object]]  # -> (model, example batch)
    processors: list
    notes: Tuple[str, ...] = ()  # prefixes every conversion note list must contain
    ops_gone: Tuple[str, ...] = ()  # ops the model emits that the rewrites must remove
    # (source, example) -> {output key: the source's own output}; None: a Keras model's call
    expected: Callable = None
    xfail: str = None  # a known gap, with the issue that closes it


def _params(cases):
    return [
        pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else [])
        for c in cases
    ]


def _rng():
    return np.random.default_rng(0)


def _mlp():
    import keras

    inp = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Dense(3, name="scores")(hidden)), _rng().random((5, 4), np.float32)


def _cnn():
    import keras

    L = keras.layers
    inp = keras.Input((16, 16, 3), name="image")
    h = L.Conv2D(8, 3, activation="relu")(inp)
    h = L.BatchNormalization()(h)
    h = L.MaxPooling2D()(h)
    h = L.Dropout(0.5)(h)
    h = L.Conv2D(4, 3, padding="same")(h)
    h = L.AveragePooling2D(2)(h)
    h = L.GlobalAveragePooling2D()(L.BatchNormalization()(h))
    return keras.Model(inp, L.Dense(3, name="scores")(h)), _rng().random((4, 16, 16, 3), np.float32)


def _leaky_relu():
    import keras

    inp = keras.Input((4,), name="features")
    hidden = keras.layers.LeakyReLU(negative_slope=0.1)(keras.layers.Dense(8)(inp))
    return keras.Model(inp, keras.layers.Dense(3, name="scores")(hidden)), _rng().standard_normal((5, 4)).astype(np.float32)


def _mobilenet_v2():
    import keras

    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=5)
    return model, _rng().random((2, 96, 96, 3), np.float32)


def _embedding():
    import keras

    inp = keras.Input((7,), dtype="int32", name="tokens")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8)(inp))
    return keras.Model(inp, keras.layers.Dense(2, name="scores")(h)), _rng().integers(0, 50, (3, 7)).astype(np.int32)


def _recurrent(layer, **kwargs):
    def build():
        import keras

        inp = keras.Input((5, 4), name="sequence")
        h = getattr(keras.layers, layer)(6, **kwargs)(inp)
        return keras.Model(inp, keras.layers.Dense(2, name="scores")(h)), _rng().random((3, 5, 4), np.float32)

    return build


def _attention():
    import keras

    inp = keras.Input((6, 8), name="tokens")
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inp, inp)
    h = keras.layers.LayerNormalization()(h + inp)
    return keras.Model(inp, keras.layers.Dense(3, name="scores")(h)), _rng().random((3, 6, 8), np.float32)


def _string_lookup():
    import keras

    L = keras.layers
    words = keras.Input((1,), dtype="string", name="word")
    value = keras.Input((1,), name="value")
    ids = L.StringLookup(vocabulary=["a", "bb", "a longer word"])(words)
    scaled = L.Normalization(mean=2.0, variance=4.0)(value)
    out = L.Concatenate(name="features")([keras.ops.cast(ids, "float32"), scaled])
    x = {
        "word": np.array([["a"], ["zz"], ["a longer word"], ["bb"]], dtype=object),
        "value": _rng().random((4, 1), np.float32),
    }
    return keras.Model({"word": words, "value": value}, out), x


def _integer_lookup():
    import keras

    inp = keras.Input((2,), dtype="int64", name="ids")
    out = keras.layers.IntegerLookup(vocabulary=[3, 5, 9], output_mode="multi_hot")(inp)
    return keras.Model(inp, out), np.array([[3, 4], [9, 9], [5, 0]], np.int64)


def _grouped_conv():
    import keras

    inp = keras.Input((8, 8, 4), name="image")
    h = keras.layers.Conv2D(6, 3, groups=2, activation="relu")(inp)  # an XLA must-compile call
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(3, name="scores")(h)), _rng().random((2, 8, 8, 4), np.float32)


def _channels_first():
    import keras

    L = keras.layers
    inp = keras.Input((3, 12, 12), name="image")
    h = L.Conv2D(4, 3, data_format="channels_first", activation="relu")(inp)
    h = L.Conv2DTranspose(4, 3, strides=2, data_format="channels_first")(h)
    h = L.MaxPooling2D(data_format="channels_first")(h)
    h = L.GlobalAveragePooling2D(data_format="channels_first")(h)
    return keras.Model(inp, L.Dense(3, name="scores")(h)), _rng().random((2, 3, 12, 12), np.float32)


def _convnext_tiny():
    import keras

    # Grouped convolutions with one channel per group (the "depthwise" 7x7 of every block).
    model = keras.applications.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3), classes=5)
    return model, _rng().random((2, 32, 32, 3), np.float32)


def _scalar_weight():
    import keras

    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale

    inp = keras.Input((4,), name="features")
    return keras.Model(inp, Scale(name="scores")(keras.layers.Dense(3)(inp))), _rng().random((3, 4), np.float32)


def _estimator(parse_v2):
    def build():
        import tempfile

        from support.estimator_models import build_estimator_saved_model, serialized_examples

        from mlflow_eas_savedmodel._tensorflow import import_tensorflow

        tf = import_tensorflow()
        path = build_estimator_saved_model(tf, os.path.join(tempfile.mkdtemp(), "export"), parse_v2=parse_v2)
        examples = serialized_examples(tf, _rng().random((3, 3)), ["red", "blue", "pink"])
        return path, examples

    return build


def _estimator_outputs(path, examples):
    from support.estimator_models import original_outputs

    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    return original_outputs(import_tensorflow(), path, "serving_default", examples)


CASES = [
    Case("mlp", _mlp, ALL_PROCESSORS),
    Case("cnn_batchnorm_dropout", _cnn, ALL_PROCESSORS),
    Case("mobilenet_v2", _mobilenet_v2, ALL_PROCESSORS),
    Case("leaky_relu", _leaky_relu, ALL_PROCESSORS, ("LeakyRelu rewritten",), ("LeakyRelu",)),
    Case("embedding", _embedding, ALL_PROCESSORS, ("SelectV2 rewritten",), ("SelectV2",)),
    Case("lstm", _recurrent("LSTM"), NOT_1_12),
    Case("gru", _recurrent("GRU"), NOT_1_12),
    Case("lstm_unrolled", _recurrent("LSTM", unroll=True), ALL_PROCESSORS),
    Case(
        "attention",
        _attention,
        ALL_PROCESSORS,
        ("BatchMatMulV2 rewritten", "Einsum rewritten"),
        ("BatchMatMulV2", "Einsum"),
    ),
    Case("string_lookup", _string_lookup, ALL_PROCESSORS),
    # multi_hot counts with DenseBincount (TF 2.3+), which has no exact rewrite here: honest 2.3+.
    Case("integer_lookup_multi_hot", _integer_lookup, FROM_2_3),
    Case(
        "grouped_conv",
        _grouped_conv,
        ALL_PROCESSORS,
        ("XLA must-compile calls inlined", "grouped convolution rewritten"),
        ("StatefulPartitionedCall",),
    ),
    Case("channels_first", _channels_first, ALL_PROCESSORS, ("channels-first ops made channels-last",)),
    Case(
        "convnext_tiny",
        _convnext_tiny,
        ALL_PROCESSORS,
        ("XLA must-compile calls inlined into plain ops: 18", "grouped convolution rewritten for CPU kernels: 18 as DepthwiseConv2dNative"),
        ("StatefulPartitionedCall",),
    ),
    Case("scalar_weight", _scalar_weight, ALL_PROCESSORS),
    Case(
        "estimator_parse_example",
        _estimator(False),
        ALL_PROCESSORS,
        ("re-exported TF1 SavedModel",),
        expected=_estimator_outputs,
    ),
    Case(
        "estimator_parse_example_v2",
        _estimator(True),
        ALL_PROCESSORS,
        ("re-exported TF1 SavedModel", "ParseExampleV2 rewritten"),
        ("ParseExampleV2",),
        expected=_estimator_outputs,
    ),
]
BY_NAME = {c.name: c for c in CASES}


@dataclasses.dataclass
class Exported:
    model: object
    x: object
    expected: dict  # output key -> Keras' own output
    path: str
    conf: dict  # the flavor's MLmodel configuration


@pytest.fixture(scope="module")
def exported(tf, tmp_path_factory):
    """``name -> Exported``, built and saved once per module and shared by every test."""
    import keras

    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            case = BY_NAME[name]
            model, x = case.build()
            path = str(tmp_path_factory.mktemp(name) / "model")
            mes.save_model(model, path)
            conf = Model.load(path).flavors[mes.FLAVOR_NAME]
            if case.expected is not None:
                expected = case.expected(model, x)
            else:
                outputs = conf["signature_defs"][conf["default_signature"]]["outputs"]
                result = model(x, training=False)
                result = result if isinstance(result, (list, tuple)) else [result]
                assert len(outputs) == len(result) == 1
                expected = {next(iter(outputs)): np.asarray(result[0])}
            cache[name] = Exported(model, x, expected, path, conf)
        return cache[name]

    return get


def _feeds(exported):
    inputs = exported.conf["signature_defs"]["serving_default"]["inputs"]
    if isinstance(exported.x, dict):
        assert set(exported.x) == set(inputs)
        return dict(exported.x)
    assert len(inputs) == 1
    return {next(iter(inputs)): exported.x}


def _assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    assert set(actual) == set(expected)
    for key in expected:
        if np.asarray(expected[key]).dtype.kind in "OSU":
            assert [bytes(v) for v in np.asarray(actual[key]).reshape(-1)] == [
                bytes(v) for v in np.asarray(expected[key]).reshape(-1)
            ], key
        else:
            np.testing.assert_allclose(actual[key], expected[key], rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize("case", _params(CASES))
def test_round_trip_matches_keras_and_processors_are_honest(exported, case):
    e = exported(case.name)
    handle = mes.load_model(e.path, device="cpu")
    try:
        _assert_close(handle.predict(_feeds(e)), e.expected)
    finally:
        handle.close()
    assert e.conf["eas_processors"] == case.processors
    assert {r["result"] for r in e.conf["verification"]["run"]["signatures"].values()} == {"matches the source"}
    for prefix in case.notes:
        assert any(n.startswith(prefix) for n in e.conf["conversion_notes"]), e.conf["conversion_notes"]
    if not case.notes:
        assert e.conf["conversion_notes"] == []


@pytest.mark.parametrize("case", _params(CASES))
def test_tf1_loader_runs_the_artifact_by_tensor_names(tf, exported, case):
    e = exported(case.name)
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            sess, ["serve"], os.path.join(e.path, e.conf["saved_model_dir"])
        )
        signature = meta_graph.signature_def["serving_default"]
        feeds = {signature.inputs[k].name: v for k, v in _feeds(e).items()}
        keys = sorted(signature.outputs)
        values = sess.run([signature.outputs[k].name for k in keys], feeds)
        graph_ops = {op.type for op in graph.get_operations()}
    _assert_close(dict(zip(keys, values)), e.expected)
    # Weights live in variables/, restored into reference variables, never in the protobuf.
    assert "VarHandleOp" not in graph_ops
    if getattr(e.model, "trainable_weights", True):
        assert "VariableV2" in graph_ops
    assert not graph_ops & set(case.ops_gone)


def _saved_graph_def(e):
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(e.path, e.conf["saved_model_dir"], "saved_model.pb"), "rb") as f:
        return saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0].graph_def


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_while_loops_are_left_out_of_1_12_by_input_arity_alone(exported, name):
    """1.12 registers every op of a lowered LSTM/GRU; only TensorList* input arity differs."""
    e = exported(name)
    graph_def = _saved_graph_def(e)
    problems = check_graph(graph_def, "1.12")
    assert problems
    assert {p.op for p in problems} <= {"TensorListGetItem", "TensorListStack", "TensorListFromTensor", "TensorListSetItem", "TensorListReserve"}
    assert all("takes inputs" in p.reason for p in problems)
    assert any(
        p.op == "TensorListGetItem" and "(input_handle, index) in TF 1.12" in p.reason for p in problems
    )
    assert "Enter" in {n.op for n in graph_def.node}  # control flow lowered, no While op
    assert "While" not in {n.op for n in graph_def.node}
    for version in [v for v in RUNTIME_VERSIONS if v != "1.12"]:
        assert check_graph(graph_def, version) == []
    assert any("takes inputs" in r for r in e.conf["eas_incompatibilities"]["1.12"])


def test_unrolled_lstm_has_no_tensor_lists(exported):
    graph_def = _saved_graph_def(exported("lstm_unrolled"))
    assert not any(n.op.startswith("TensorList") for n in graph_def.node)
    assert check_graph(graph_def, "1.12") == []


# --------------------------------------------------------------------------- real old runtimes

RUNTIME_CASES = [
    "mlp", "cnn_batchnorm_dropout", "embedding", "attention", "string_lookup", "lstm", "leaky_relu",
    "grouped_conv", "channels_first", "convnext_tiny", "scalar_weight",
    "estimator_parse_example", "estimator_parse_example_v2",
]
# Old TensorFlow builds use other kernels (Eigen, no oneDNN): allow float32 rounding noise.
RUNTIME_RTOL, RUNTIME_ATOL = 1e-5, 1e-5


def _runtime_params():
    params = []
    for name in RUNTIME_CASES:
        versions = runtime_versions(ci_first=True)
        xfail = BY_NAME[name].xfail
        marks = [pytest.mark.xfail(reason=xfail, strict=True)] if xfail else []
        params.extend(pytest.param(name, v, id=f"{name}-tf{v}", marks=marks) for v in versions)
    return params


@pytest.mark.runtime
@pytest.mark.parametrize("name,version", _runtime_params())
def test_compatible_list_holds_in_the_real_runtime(exported, name, version):
    from mlflow_eas_savedmodel.runtimes.runtime_process import run_in_runtime

    e = exported(name)
    claimed = any(PROCESSORS[p] == version for p in e.conf["eas_processors"])
    run = run_in_runtime(
        os.path.join(e.path, e.conf["saved_model_dir"]), version, {"serving_default": _feeds(e)}
    )
    if not claimed:
        # Left out of the list: the runtime must really reject it (C++ loader, what EAS uses).
        assert not run.ok and not run.c_api_load_ok, run.report
        return
    assert run.ok, run.report
    for outputs in (run.c_api_outputs["serving_default"], run.outputs["serving_default"]):
        _assert_close(outputs, e.expected, RUNTIME_RTOL, RUNTIME_ATOL)
