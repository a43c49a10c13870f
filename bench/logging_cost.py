"""Workers for the cost of logging: ``log_once`` (one flavor, one model, defaults) and
``export_growth`` (our export of MLPs of growing weight size: time, sizes, peak memory).

Each runs in a fresh process with a fresh sqlite store whose schema migration is done before
the clock starts; imports are done before it too, so the figure is ``log_model`` itself.
"""

import os
import resource
import time

from bench.models import build, build_wide_mlp, example_batch, use_fresh_store, weights_nbytes


def _tree_size(path):
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def _current_rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _requirements(model_dir):
    with open(os.path.join(model_dir, "requirements.txt")) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def _log(flavor, model, input_example):
    import functools

    import mlflow

    if flavor in ("ours", "ours_unverified"):
        import mlflow_eas_savedmodel

        log_model = mlflow_eas_savedmodel.log_model
        if flavor == "ours_unverified":  # the post-save check off: what the check costs
            log_model = functools.partial(log_model, verify=False)
    else:
        import mlflow.tensorflow

        log_model = mlflow.tensorflow.log_model
    with mlflow.start_run():
        start = time.perf_counter()
        info = log_model(model, name="model", input_example=input_example)
        seconds = time.perf_counter() - start
    local = mlflow.artifacts.download_artifacts(info.model_uri)
    return seconds, local


def log_once(workdir, flavor, kind, with_example):
    """Seconds of one ``log_model`` (``flavor``: ``ours``, ``ours_unverified`` (``verify=False``)
    or ``mlflow_tf``), artifact size, requirements."""
    import mlflow  # noqa: F401 - imported before the clock, as in any training script

    if flavor.startswith("ours"):
        import mlflow_eas_savedmodel  # noqa: F401
    else:
        import mlflow.tensorflow  # noqa: F401
    use_fresh_store(workdir)
    model = build(kind)
    example = example_batch(kind, 2) if with_example else None
    seconds, local = _log(flavor, model, example)
    requirements = _requirements(local)
    return {
        "seconds": seconds,
        "artifact_bytes": _tree_size(local),
        "requirements": requirements,
        "pinned": all("==" in r for r in requirements),
    }


def _numpy_save_seconds(model, path):
    """The floor for writing the weights: ``np.savez`` of every weight to one local file."""
    import numpy as np

    start = time.perf_counter()
    np.savez(path, *[w.numpy() for w in model.weights])
    seconds = time.perf_counter() - start
    os.remove(path)
    return seconds


def export_growth(workdir, weight_bytes):
    """Our ``log_model`` of a wide MLP holding ``weight_bytes`` of weights: time, sizes, memory.

    ``extra_memory_bytes`` is the process's RSS high-water mark after logging minus its RSS
    once the model is built: what the export needs on top of the model itself.
    """
    import mlflow  # noqa: F401

    import mlflow_eas_savedmodel  # noqa: F401
    from mlflow_eas_savedmodel.flavor import SAVED_MODEL_DIR

    use_fresh_store(workdir)
    model = build_wide_mlp(weight_bytes)
    weights = weights_nbytes(model)
    rss_after_build = _current_rss_bytes()
    seconds, local = _log("ours", model, None)
    peak = _peak_rss_bytes()
    numpy_save_seconds = _numpy_save_seconds(model, os.path.join(workdir, "weights.npz"))
    return {
        "numpy_save_seconds": numpy_save_seconds,
        "weights_bytes": weights,
        "seconds": seconds,
        "artifact_bytes": _tree_size(local),
        "saved_model_pb_bytes": os.path.getsize(os.path.join(local, SAVED_MODEL_DIR, "saved_model.pb")),
        "rss_after_build_bytes": rss_after_build,
        "peak_rss_bytes": peak,
        "extra_memory_bytes": peak - rss_after_build,
    }
