"""Every ``Example:`` of the package's docstrings runs as written (doctest), so none can rot.

Each example runs in a fresh folder with the current directory set to it: the examples save to
``"model"`` (or write a SavedModel or checkpoint there) and those that need a tracking or
registry store point MLflow at ``sqlite:///mlflow.db`` there, as a user would. An example that
cannot run here (it needs Alibaba Cloud) is a literal block, not a ``>>>`` one.
"""

import doctest
import pathlib

import mlflow
import pytest

from mlflow_eas_savedmodel import integrity, load, model, registry, save
from mlflow_eas_savedmodel.eas import (
    endpoint,
    inspection,
    package,
    protocol,
    runtime_check,
    service_config,
    warmup,
)
from mlflow_eas_savedmodel.graph import module as graph_module
from mlflow_eas_savedmodel.graph import ops_policy
from mlflow_eas_savedmodel.sources import checkpoint, saved_model, session

MODULES = (
    save, load, model, integrity, registry, runtime_check, protocol, warmup, package,
    service_config, inspection, endpoint, ops_policy, saved_model, checkpoint, session,
    graph_module,
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for module in MODULES for test in finder.find(module) if test.examples]


EXAMPLES = {test.name: test for test in _examples()}


def test_every_public_function_of_the_flavor_has_an_example():
    public = {
        "mlflow_eas_savedmodel.save.save_model",
        "mlflow_eas_savedmodel.save.log_model",
        "mlflow_eas_savedmodel.save.get_default_pip_requirements",
        "mlflow_eas_savedmodel.save.get_default_conda_env",
        "mlflow_eas_savedmodel.load.load_model",
        "mlflow_eas_savedmodel.model.EasSavedModel.predict",
        "mlflow_eas_savedmodel.model.EasSavedModel.signature_runner",
        "mlflow_eas_savedmodel.model.EasSavedModel.close",
        "mlflow_eas_savedmodel.integrity",
        "mlflow_eas_savedmodel.integrity.hash_tree",
        "mlflow_eas_savedmodel.integrity.verify",
        "mlflow_eas_savedmodel.eas.runtime_check.check_runtime",
        "mlflow_eas_savedmodel.registry.promote",
        "mlflow_eas_savedmodel.eas.protocol.encode_request",
        "mlflow_eas_savedmodel.eas.warmup.write_warmup_files",
        "mlflow_eas_savedmodel.eas.package.write_eas_package",
        "mlflow_eas_savedmodel.eas.service_config.service_config",
        "mlflow_eas_savedmodel.eas.inspection.describe_model",
        "mlflow_eas_savedmodel.eas.endpoint.serve_eas",
        "mlflow_eas_savedmodel.graph.ops_policy.check_graph_def",
        "mlflow_eas_savedmodel.sources.saved_model.saved_model_to_serving_graph",
        "mlflow_eas_savedmodel.sources.checkpoint.checkpoint_to_serving_graph",
        "mlflow_eas_savedmodel.sources.session.session_to_serving_graph",
        "mlflow_eas_savedmodel.graph.module",
    }
    assert public <= set(EXAMPLES), sorted(public - set(EXAMPLES))


def test_every_module_with_a_doctest_example_is_run_here():
    package = pathlib.Path(save.__file__).parent
    with_examples = {
        ".".join(("mlflow_eas_savedmodel", *path.relative_to(package).with_suffix("").parts))
        for path in package.rglob("*.py")
        if ">>>" in path.read_text(encoding="utf-8")
    }
    assert with_examples <= {m.__name__ for m in MODULES}, sorted(
        with_examples - {m.__name__ for m in MODULES}
    )


@pytest.fixture
def in_fresh_folder(tmp_path, monkeypatch, tf):
    monkeypatch.chdir(tmp_path)
    # A user's fresh process has no active experiment; an earlier test's set_experiment would
    # point start_run at an experiment id the example's new store does not have.
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    # MLflow caches stores by URI, so "sqlite:///mlflow.db" would still open the first
    # folder's database: each example must get the store of its own folder.
    from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
    ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()
    mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    try:
        yield
    finally:
        mlflow.end_run()
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_docstring_example_runs(name, in_fresh_folder):
    test = EXAMPLES[name]
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    output = []
    runner.run(test, out=output.append, clear_globs=True)
    assert runner.failures == 0, "".join(output)
