"""Recommender models nobody here wrote (issue 21, item 6): tensorflow-recommenders' tutorial
models (subclassed tf_keras, dict string features) and keras-rs 0.4.0 layers in Keras 3 models.

Each converts, answers like the original model (floats within 1e-5, top-k titles and ids
equal), claims every EAS processor statically, and the ``runtime`` tests run the claim in the
real old runtimes (TF 1.12 or 2.3 per model by default; every claimed CPU one with
``MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1``). tensorflow-recommenders needs ``tf.keras`` to be Keras
2, so its models are built and saved in a child process (``tests/support/recsys_models.py``); they are
loaded and compared here. Both packages are installed by ``dev.py setup`` (``--no-deps``);
without them these tests skip, naming the install command.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import all_runtimes
from mlflow.models import Model

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import runtimes

from support.paths import SUPPORT
from support.recsys_models import CASES as TFRS_CASES

RUNTIMES = ["tensorflow_cpu_1.12", "tensorflow_cpu_2.3"]
INSTALL = "uv pip install --python .venv/bin/python --no-deps {}  (or `python3.11 dev.py setup`)"


def _processors(path):
    return Model.load(path).flavors[mes.FLAVOR_NAME]["eas_processors"]


def _assert_answers(got, expected):
    """Outputs equal by key (a single output compared whatever its key): floats close, else equal."""
    if len(got) == 1 and len(expected) == 1:
        got, expected = {"_": next(iter(got.values()))}, {"_": next(iter(expected.values()))}
    assert sorted(got) == sorted(expected)
    for key, want in expected.items():
        if want.dtype.kind in "f":
            np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key].astype(want.dtype), want, err_msg=key)


@pytest.fixture(scope="module")
def tfrs_cases(tmp_path_factory, tf):
    if importlib.util.find_spec("tensorflow_recommenders") is None:
        pytest.skip("tensorflow-recommenders is not installed: " + INSTALL.format("tensorflow-recommenders==0.7.7"))
    workdir = tmp_path_factory.mktemp("tfrs")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    child = subprocess.run(
        [sys.executable, str(SUPPORT / "recsys_models.py"), str(workdir)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    if (workdir / "skip.txt").exists():
        pytest.skip(f"tensorflow-recommenders does not import ({(workdir / 'skip.txt').read_text()})")
    assert child.returncode == 0, child.stderr[-4000:]
    return workdir, json.loads((workdir / "cases.json").read_text())


@pytest.mark.parametrize("case", TFRS_CASES)
def test_tfrs_model_converts_and_answers_like_the_original(tfrs_cases, case):
    workdir, done = tfrs_cases
    folder = workdir / case
    assert done[case] == "saved", (folder / "error.txt").read_text()
    inputs = dict(np.load(folder / "inputs.npz", allow_pickle=False))
    expected = dict(np.load(folder / "expected.npz", allow_pickle=False))
    got = mes.load_model(str(folder / "model"), device="cpu").predict(inputs)
    _assert_answers(got, expected)
    assert _processors(str(folder / "model")) == list(runtimes.PROCESSORS)


def _runtime_cases(names):
    """``(name, processor)``: by default one runtime each (1.12, 2.3); every CPU one with ALL."""
    if all_runtimes():
        return [(n, p) for n in names for p in runtimes.PROCESSORS if "cpu" in p]
    return list(zip(names, RUNTIMES))


@pytest.mark.runtime
@pytest.mark.parametrize("case,processor", _runtime_cases(["ranking_called", "retrieval_index_called"]))
def test_tfrs_model_runs_in_the_claimed_runtime(tfrs_cases, case, processor):
    workdir, done = tfrs_cases
    assert done[case] == "saved", (workdir / case / "error.txt").read_text()
    inputs = dict(np.load(workdir / case / "inputs.npz", allow_pickle=False))
    path = str(workdir / case / "model")
    assert processor in _processors(path)
    report = mes.check_runtime(path, processor, inputs=inputs, timeout=600)
    assert report.ok, report.format()


# keras-rs: its layers in Keras 3 models (functional DCN and DLRM rankers, a retrieval tower with
# a top-k layer, a pooled multi-hot embedding, and a subclassed two-tower model on dict features).

@pytest.fixture(scope="module")
def keras_rs_models(tf):
    if importlib.util.find_spec("keras_rs") is None:
        pytest.skip("keras-rs is not installed: " + INSTALL.format("keras-rs==0.4.0"))
    import keras
    import keras_rs

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    models = {}

    dense = keras.Input((5,), name="dense")
    item = keras.Input((1,), dtype="int32", name="item_id")
    x0 = keras.layers.Concatenate()([dense, keras.layers.Flatten()(keras.layers.Embedding(10, 5)(item))])
    x = keras_rs.layers.FeatureCross()(x0, x0)
    x = keras_rs.layers.FeatureCross(projection_dim=4)(x0, x)
    models["dcn_feature_cross"] = (
        keras.Model([dense, item], keras.layers.Dense(1, name="score")(x)),
        {"dense": rng.normal(size=(6, 5)).astype("float32"),
         "item_id": rng.integers(0, 10, (6, 1)).astype("int32")},
    )

    towers = [keras.Input((4,), name=n) for n in ("user", "item", "context")]
    models["dlrm_dot_interaction"] = (
        keras.Model(towers, keras.layers.Dense(1, name="ctr")(keras_rs.layers.DotInteraction()(towers))),
        {n: rng.normal(size=(6, 4)).astype("float32") for n in ("user", "item", "context")},
    )

    user = keras.Input((1,), dtype="int32", name="user_id")
    query = keras.layers.Flatten()(keras.layers.Embedding(6, 4)(user))
    top_k = keras_rs.layers.BruteForceRetrieval(k=3, return_scores=True)
    top_k.update_candidates(rng.normal(size=(7, 4)).astype("float32"))
    scores, ids = top_k(query)
    models["brute_force_retrieval"] = (
        keras.Model(user, {"scores": scores, "ids": ids}),
        {"user_id": rng.integers(0, 6, (6, 1)).astype("int32")},
    )

    tags = keras.Input((3,), dtype="int32", name="tags")
    models["embed_reduce"] = (
        keras.Model(tags, keras_rs.layers.EmbedReduce(10, 4, combiner="mean")(tags)),
        {"tags": rng.integers(0, 10, (6, 3)).astype("int32")},
    )

    class TwoTower(keras.Model):
        def __init__(self):
            super().__init__(name="two_tower")
            self.user, self.item = keras.layers.Embedding(6, 4), keras.layers.Embedding(10, 4)
            self.cross = keras_rs.layers.FeatureCross()
            self.head = keras.layers.Dense(1)

        def call(self, features):
            u, i = self.user(features["user_id"]), self.item(features["item_id"])
            return self.head(self.cross(u, i))

    features = {"user_id": rng.integers(0, 6, (6,)).astype("int32"),
                "item_id": rng.integers(0, 10, (6,)).astype("int32")}
    models["subclassed_two_tower"] = (TwoTower(), features)
    return models


def _answer(model, inputs):
    out = model(inputs)
    out = out if isinstance(out, dict) else {"outputs": out}
    return {k: np.asarray(v) for k, v in out.items()}


KERAS_RS = ["dcn_feature_cross", "dlrm_dot_interaction", "brute_force_retrieval", "embed_reduce",
            "subclassed_two_tower"]


@pytest.fixture(scope="module")
def keras_rs_saved(keras_rs_models, tmp_path_factory):
    saved = {}
    for name, (model, inputs) in keras_rs_models.items():
        path = str(tmp_path_factory.mktemp(name) / "m")
        # The subclassed model is never called: its example gives the int32 ids' dtype.
        example = {k: v[:2] for k, v in inputs.items()} if name == "subclassed_two_tower" else None
        mes.save_model(model, path, input_example=example)
        saved[name] = (path, inputs, _answer(model, inputs))
    return saved


@pytest.mark.parametrize("name", KERAS_RS)
def test_keras_rs_model_converts_and_answers_like_the_original(keras_rs_saved, name):
    path, inputs, expected = keras_rs_saved[name]
    _assert_answers(mes.load_model(path, device="cpu").predict(inputs), expected)
    assert _processors(path) == list(runtimes.PROCESSORS)


@pytest.mark.runtime
@pytest.mark.parametrize("name,processor", _runtime_cases(["dcn_feature_cross", "brute_force_retrieval"]))
def test_keras_rs_model_runs_in_the_claimed_runtime(keras_rs_saved, name, processor):
    path, inputs, _ = keras_rs_saved[name]
    report = mes.check_runtime(path, processor, inputs=inputs, timeout=600)
    assert report.ok, report.format()
