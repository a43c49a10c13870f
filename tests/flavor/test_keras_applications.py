"""``keras.applications`` with ``weights=None``: TF 2.21 round trip and the real 1.15/2.3 runtimes.

Six architectures users bring (MobileNetV3Small, EfficientNetB0, ResNet50, DenseNet121,
ConvNeXtTiny, NASNetMobile) at 64x64, compared on logits (``classifier_activation=None``:
softmax of an untrained head is nearly uniform and would hide differences). 2.5 minutes on
2 cores (measured), so opt-in: ``MLFLOW_EAS_SAVEDMODEL_APPLICATIONS=1 python -m pytest
tests/flavor/test_keras_applications.py``. Results of one run are in ``docs/models-tested.md``.
"""

import os

import numpy as np
import pytest

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import runtimes
from support.mlmodel import read_flavor

pytestmark = pytest.mark.skipif(
    os.environ.get("MLFLOW_EAS_SAVEDMODEL_APPLICATIONS") != "1",
    reason="set MLFLOW_EAS_SAVEDMODEL_APPLICATIONS=1 (about 2.5 minutes)",
)

APPLICATIONS = ["MobileNetV3Small", "EfficientNetB0", "ResNet50", "DenseNet121", "ConvNeXtTiny", "NASNetMobile"]
SHAPE = (64, 64, 3)


@pytest.fixture(scope="module", params=APPLICATIONS)
def saved(request, tmp_path_factory):
    """``(name, MLflow model path, images, the model's own logits)``."""
    import keras

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, request.param)(
        input_shape=SHAPE, weights=None, classes=10, classifier_activation=None
    )
    images = np.random.default_rng(0).uniform(0, 255, size=(2,) + SHAPE).astype("float32")
    expected = np.asarray(model(images, training=False))
    path = str(tmp_path_factory.mktemp(request.param) / "m")
    mes.save_model(model, path)
    return request.param, path, images, expected


def test_application_answers_like_keras_and_claims_every_processor(saved):
    _, path, images, expected = saved
    assert read_flavor(path)["eas_processors"] == list(runtimes.PROCESSORS)
    (actual,) = mes.load_model(path).predict(images).values()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.runtime
@pytest.mark.parametrize("processor", ["tensorflow_cpu_1.15", "tensorflow_cpu_2.3"])
def test_application_runs_in_the_real_runtime(saved, processor):
    _, path, images, _ = saved
    report = mes.check_runtime(path, processor, inputs=images, timeout=900)
    assert report.ok, report.format()
    assert report.runtimes[0].claimed
