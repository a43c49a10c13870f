"""Workers for the cost of logging: ``log_once`` (one flavor, one model, defaults) and
``export_growth`` (our ``save_model`` of MLPs of growing weight size: time, sizes, peak memory)
and ``load_peak`` (the memory ``load_model`` of such a model needs).

Each runs in a fresh process with a fresh sqlite store whose schema migration is done before
the clock starts; imports are done before it too, so the figure is ``log_model`` itself.
"""

import os
import shutil
import time

from bench.models import build, build_wide_mlp, example_batch, use_fresh_store, weights_nbytes


def _tree_size(path):
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def _current_rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


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
        # A bundled wheel (wheels/<name>-<version>-...whl, issue 22) pins as exactly as "==".
        "pinned": all("==" in r or r.endswith(".whl") for r in requirements),
    }


def _numpy_save_seconds(model, folder):
    """The floor for writing the weights: ``np.save`` of every weight, one file each."""
    import numpy as np

    os.makedirs(folder)
    os.sync()  # the export's dirty pages must not slow this write down (nor the reverse)
    start = time.perf_counter()
    for i, w in enumerate(model.weights):
        np.save(os.path.join(folder, f"{i}.npy"), w.numpy())
    seconds = time.perf_counter() - start
    shutil.rmtree(folder)
    return seconds


def _reset_peak_rss():
    """Resets the kernel's RSS high-water mark (VmHWM), so a peak is that of what follows."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_since_reset_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def export_growth(workdir, weight_bytes):
    """Our ``save_model`` of a wide MLP holding ``weight_bytes`` of weights: time, sizes, memory.

    ``extra_memory_bytes`` is the RSS high-water mark during ``save_model`` (reset just before
    it) minus the RSS once the model is built: what the export needs on top of the model.
    """
    import mlflow_eas_savedmodel as mes
    from mlflow_eas_savedmodel.flavor_conf import SAVED_MODEL_DIR

    model = build_wide_mlp(weight_bytes)
    weights = weights_nbytes(model)
    path = os.path.join(workdir, "model")
    mes.save_model(build_wide_mlp(1024), os.path.join(workdir, "warm-up"))  # imports, registries
    rss_after_build = _current_rss_bytes()
    os.sync()
    _reset_peak_rss()
    start = time.perf_counter()
    mes.save_model(model, path)
    seconds = time.perf_counter() - start
    peak = _peak_since_reset_bytes()
    numpy_save_seconds = _numpy_save_seconds(model, os.path.join(workdir, "npy"))
    return {
        "model_path": path,
        "numpy_save_seconds": numpy_save_seconds,
        "weights_bytes": weights,
        "seconds": seconds,
        "artifact_bytes": _tree_size(path),
        "saved_model_pb_bytes": os.path.getsize(os.path.join(path, SAVED_MODEL_DIR, "saved_model.pb")),
        "rss_after_build_bytes": rss_after_build,
        "peak_rss_bytes": peak,
        "extra_memory_bytes": peak - rss_after_build,
    }


def load_peak(model_path, weight_bytes):
    """Peak RSS of ``load_model`` (integrity check and first predict included) above the RSS
    before it, in a fresh process."""
    import numpy as np

    import mlflow_eas_savedmodel as mes
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow
    from bench.models import wide_mlp_width

    import_tensorflow()
    rss_before = _current_rss_bytes()
    _reset_peak_rss()
    start = time.perf_counter()
    handle = mes.load_model(model_path)
    handle.predict(np.zeros((1, wide_mlp_width(weight_bytes)), np.float32))
    seconds = time.perf_counter() - start
    return {"extra_memory_bytes": _peak_since_reset_bytes() - rss_before, "seconds": seconds}
