"""A real sqlite MLflow store for tests: the one way tests point MLflow at a fresh store.

A sqlite tracking URI alone keeps the store's artifacts in ``./mlruns`` of the current folder (MLflow's
default artifact root), so every experiment here is created with an explicit ``artifact_location``
under the test's folder; ``conftest.no_mlruns_outside_tmp`` fails the session if ``./mlruns`` appears
in the repository or in the folder pytest started in.
"""

import contextlib


@contextlib.contextmanager
def sqlite_store(root, experiment):
    """Points MLflow at a fresh sqlite store under ``root`` (artifacts in ``root/artifacts``),
    with an active experiment; yields the store URI and restores the defaults afterwards."""
    import mlflow

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment_id = mlflow.create_experiment(experiment, artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        yield uri
    finally:
        mlflow.end_run()
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
