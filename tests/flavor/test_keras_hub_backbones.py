"""keras-hub backbones built from tiny configs (no downloaded weights): TF 2.21 and real runtimes.

Skipped unless ``keras_hub`` is importable; it is not a dependency of this package. To run:
``uv pip install --python .venv/bin/python --no-deps keras-hub regex tokenizers``.
"""

import numpy as np
import pytest

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import runtimes
from support.mlmodel import read_flavor

# ImportError too: keras_hub installed without regex or tokenizers fails to import.
keras_hub = pytest.importorskip("keras_hub", exc_type=ImportError)

CONFIG = dict(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
BACKBONES = ["BertBackbone", "GPT2Backbone", "DistilBertBackbone"]


def _inputs(model):
    rng = np.random.default_rng(0)
    inputs = {
        "token_ids": rng.integers(1, CONFIG["vocabulary_size"], size=(2, 8)).astype("int32"),
        "padding_mask": np.array([[1] * 8, [1] * 5 + [0] * 3], "int32"),  # a padded row
    }
    if "segment_ids" in model.input:
        inputs["segment_ids"] = np.array([[0] * 4 + [1] * 4, [0] * 8], "int32")
    return inputs


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``{backbone: (MLflow model path, inputs, {output key: the model's own answer})}``."""
    import keras

    out = {}
    for name in BACKBONES:
        keras.utils.set_random_seed(0)
        model = getattr(keras_hub.models, name)(**CONFIG)
        inputs = _inputs(model)
        expected = model(inputs)
        expected = {k: np.asarray(v) for k, v in expected.items()} if isinstance(expected, dict) else np.asarray(expected)
        path = str(tmp_path_factory.mktemp(name) / "m")
        mes.save_model(model, path)
        out[name] = (path, inputs, expected)
    return out


def _single(outputs):
    (value,) = outputs.values()
    return value


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_answers_like_keras_and_claims_every_processor(saved, name):
    path, inputs, expected = saved[name]
    assert read_flavor(path)["eas_processors"] == list(runtimes.PROCESSORS)
    actual = mes.load_model(path).predict(inputs)
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        for k in expected:
            np.testing.assert_allclose(actual[k], expected[k], rtol=1e-5, atol=1e-5, err_msg=k)
    else:
        np.testing.assert_allclose(_single(actual), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.runtime
@pytest.mark.parametrize("processor", ["tensorflow_cpu_1.15", "tensorflow_cpu_2.3"])
@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_runs_in_the_real_runtime(saved, name, processor):
    path, inputs, _ = saved[name]
    report = mes.check_runtime(path, processor, inputs=inputs, timeout=600)
    assert report.ok, report.format()
    assert report.runtimes[0].claimed
