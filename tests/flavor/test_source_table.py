"""The sources are one declared table: a new kind is one ``Source`` plus one entry in ``SOURCES``.

The toy kind below serves a ``tf.Module`` passed directly (no checkpoint): its whole definition
is the ``TF_MODULE`` declaration and its two small functions, the conversion being the public
:func:`mlflow_eas_savedmodel.graph.module.module_to_serving_graph`. Put in the table (by
monkeypatching ``sources.SOURCES``), ``save_model`` converts, exports and verifies it like any
other kind, the MLmodel records its kind, the errors list it, and the options it does not take
are refused; taken out again, the same module is refused.
"""

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import sources
from mlflow_eas_savedmodel.graph.module import module_to_serving_graph
from mlflow_eas_savedmodel.sources import Source


def _is_tf_module(model):
    return any(
        cls.__name__ == "Module" and cls.__module__.startswith("tensorflow")
        for cls in type(model).__mro__
    )


def _module_to_serving_graph(model, options):
    serving_graph = module_to_serving_graph(model, options.signature_name, options.default_signature)
    serving_graph.source = "tf_module"
    return serving_graph


TF_MODULE = Source(
    kind="tf_module",
    description="a tf.Module with input_signature methods",
    options=("signature_name", "default_signature", "input_example"),
    accepts=_is_tf_module,
    to_serving_graph=_module_to_serving_graph,
)


@pytest.fixture
def with_tf_module(monkeypatch):
    monkeypatch.setattr(sources, "SOURCES", (*sources.SOURCES, TF_MODULE))


def _scorer(tf):
    module = tf.Module()
    module.w = tf.Variable(np.arange(12, dtype="float32").reshape(4, 3) / 10, name="w")
    module.b = tf.Variable([0.5, -0.5, 1.0], name="b")
    spec = tf.TensorSpec([None, 4], tf.float32, name="image")
    module.__call__ = tf.function(lambda x: {"scores": x @ module.w + module.b}, input_signature=[spec])
    module.top = tf.function(lambda x: tf.argmax(x @ module.w + module.b, axis=1), input_signature=[spec])
    return module


def test_the_table_is_the_one_list_of_kinds():
    assert [s.kind for s in sources.SOURCES] == ["keras", "session", "saved_model", "checkpoint"]
    for source in sources.SOURCES:
        assert source.description in sources.SUPPORTED


def test_a_new_kind_is_saved_loaded_and_served(with_tf_module, tmp_path, tf):
    module = _scorer(tf)
    xs = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    assert sources.source_kind(module) == "tf_module"

    mes.save_model(module, str(tmp_path / "model"), default_signature="serving_default")

    handle = mes.load_model(str(tmp_path / "model"), device="cpu")
    expected = xs @ module.w.numpy() + module.b.numpy()
    np.testing.assert_allclose(handle.predict({"image": xs})["scores"], expected, rtol=1e-6)
    np.testing.assert_array_equal(
        handle.predict({"image": xs}, signature_name="top")["output_0"], expected.argmax(axis=1)
    )
    from mlflow.models import Model

    conf = Model.load(str(tmp_path / "model")).flavors["eas_savedmodel"]
    assert conf["source"] == "tf_module"


def test_a_new_kind_is_listed_where_the_accepted_models_are(with_tf_module, tmp_path):
    with pytest.raises(MlflowException) as error:
        mes.save_model({"not": "a model"}, str(tmp_path / "model"))
    assert str(error.value.message).endswith(
        "a tf.compat.v1.Session, a SavedModel folder, a tf.train.Saver checkpoint prefix, "
        "or a tf.Module with input_signature methods."
    )


def test_a_new_kind_refuses_the_options_it_does_not_take(with_tf_module, tmp_path, tf):
    with pytest.raises(MlflowException, match=(
        r"`init_op=` cannot be used with a tf_module source\. "
        r"It takes: signature_name, default_signature, input_example\."
    )):
        mes.save_model(_scorer(tf), str(tmp_path / "model"), init_op="init")


def test_without_its_entry_the_kind_is_refused(tmp_path, tf):
    with pytest.raises(MlflowException, match="Cannot log an object of type .*Module. Pass a Keras") as error:
        mes.save_model(_scorer(tf), str(tmp_path / "model"))
    assert "tf.Module" not in str(error.value.message)
