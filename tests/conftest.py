"""Shared fixtures: a real sqlite MLflow store per test, and small Keras models."""

import os

import numpy as np
import pytest
from stores import sqlite_store

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch):
    """A fresh sqlite tracking store and local artifact root under the test's tmp folder."""
    monkeypatch.chdir(tmp_path)
    with sqlite_store(tmp_path, "tests") as uri:
        yield uri


@pytest.fixture(scope="session")
def tf():
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    return import_tensorflow()


@pytest.fixture(scope="session")
def mlp(tf):
    """A 4-16-3 MLP with named input ``image`` and output ``scores``."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="image")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inp)
    out = keras.layers.Dense(3, name="scores")(hidden)
    return keras.Model(inp, out, name="mlp")


@pytest.fixture
def x4():
    return np.random.default_rng(0).random((5, 4), dtype=np.float32)
