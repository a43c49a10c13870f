"""Shared fixtures: a real sqlite MLflow store per test, small Keras models, and the two
multi-signature session models of ``tests/support/multi_signature.py`` (saved once per session; the
tests only read them)."""

import os

import numpy as np
from support import multi_signature
import pytest
from support.stores import sqlite_store

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The runtimes CI runs by default (each old runtime run costs minutes): the most used TF1 one and
# the first TF2 one. ``MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1`` runs every one of the table
# (mlflow_eas_savedmodel/runtimes/table.py) where a test file honours it.
CI_RUNTIMES = ("1.15", "2.3")


def all_runtimes():
    """Whether ``MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1`` asks for every runtime."""
    return os.environ.get("MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES") == "1"


def runtime_versions(ci_default=CI_RUNTIMES, ci_first=False):
    """The TF versions a ``runtime`` test runs: ``ci_default``, or every runtime (oldest first;
    ``ci_first``: ``ci_default`` first, then the others) with ``MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1``.

    Module level, for ``pytest.mark.parametrize``: ``from conftest import runtime_versions``.
    """
    from mlflow_eas_savedmodel.runtimes import RUNTIME_VERSIONS

    unknown = set(ci_default) - set(RUNTIME_VERSIONS)
    assert not unknown, f"not runtimes of the table: {sorted(unknown)}"
    if not all_runtimes():
        return list(ci_default)
    if ci_first:
        return list(ci_default) + [v for v in RUNTIME_VERSIONS if v not in ci_default]
    return list(RUNTIME_VERSIONS)


@pytest.fixture(scope="session", autouse=True)
def no_mlruns_outside_tmp():
    """Fails the session when a test left MLflow artifacts in ``./mlruns`` of the repository or of
    the folder pytest started in: a sqlite tracking URI alone puts an experiment's artifacts there.
    Tests keep them in their tmp folder (``tests/support/stores.py``: an explicit ``artifact_location``)."""
    folders = sorted({os.getcwd(), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})

    def entries(folder):
        path = os.path.join(folder, "mlruns")
        return set(os.listdir(path)) if os.path.isdir(path) else set()

    before = {folder: entries(folder) for folder in folders}
    yield
    left = {os.path.join(f, "mlruns"): sorted(entries(f) - before[f]) for f in folders if entries(f) - before[f]}
    assert not left, (
        f"Tests wrote MLflow artifacts outside their tmp folder: {left}. A sqlite tracking URI alone puts "
        "them in ./mlruns; use tests/support/stores.py's sqlite_store(tmp_path, ...) or create the experiment with "
        "artifact_location under tmp_path."
    )


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


@pytest.fixture(scope="session")
def multi_signature_model(tmp_path_factory, tf):
    """Folder of ``multi_signature.DECODER_MODEL``: ``serving_default`` (image -> scores),
    ``pair`` (a, b -> total, doubled), ``words`` (strings -> length), ``anything`` (any rank)."""
    return multi_signature.save(tf, tmp_path_factory.mktemp("multi_signature") / "model", multi_signature.DECODER_MODEL)


@pytest.fixture(scope="session")
def eas_session_model(tmp_path_factory, tf):
    """Folder (str) of ``multi_signature.EAS_MODEL``: ``serving_default`` (x -> y, n) with an input
    example, ``lookup`` (s -> ids, echo) without."""
    path = str(tmp_path_factory.mktemp("eas_session_model") / "model")
    return multi_signature.save(tf, path, multi_signature.EAS_MODEL, input_example={"x": multi_signature.EAS_EXAMPLE})
