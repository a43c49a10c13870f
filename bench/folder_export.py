"""TF2 SavedModel folders as sources: what ``save_model(folder)`` needs on top of the process.

A Keras 3 ``model.export()`` folder is what a serving team receives; converting it must not
restore every variable at once (issue 21). Two fresh processes per size: one builds the wide
MLP of :mod:`bench.models` and exports it (its memory is gone when the next starts), the other
converts the folder and reports the RSS high-water mark during ``save_model`` above the RSS
before it (after a warm-up conversion of a tiny folder: imports, op registries).
"""

import os
import time

from bench.logging_cost import _current_rss_bytes, _peak_since_reset_bytes, _reset_peak_rss, _tree_size
from bench.models import build_wide_mlp, weights_nbytes


def export_folder(workdir, weight_bytes):
    """Writes ``model.export()`` of the wide MLP; returns the folder, the weights' bytes and
    the size of its ``variables/`` (Keras' export stores every variable twice)."""
    model = build_wide_mlp(weight_bytes)
    folder = os.path.join(workdir, "export")
    model.export(folder, verbose=False)
    return {"folder": folder, "weights_bytes": weights_nbytes(model), "variables_bytes": _variables_bytes(folder)}


def _variables_bytes(folder):
    var_dir = os.path.join(folder, "variables")
    return sum(os.path.getsize(os.path.join(var_dir, f)) for f in os.listdir(var_dir) if ".data-" in f)


def folder_save_peak(folder, workdir, verify):
    """``save_model(folder)`` in this fresh process: seconds, peak RSS above the RSS before."""
    import mlflow_eas_savedmodel as mes
    from mlflow_eas_savedmodel.flavor_conf import SAVED_MODEL_DIR

    warm = os.path.join(workdir, "warm-up")
    build_wide_mlp(1024).export(warm, verbose=False)
    mes.save_model(warm, os.path.join(workdir, "warm-up-model"), verify=verify)
    path = os.path.join(workdir, "model")
    rss_before = _current_rss_bytes()
    os.sync()
    _reset_peak_rss()
    start = time.perf_counter()
    mes.save_model(folder, path, verify=verify)
    seconds = time.perf_counter() - start
    peak = _peak_since_reset_bytes()
    import yaml

    with open(os.path.join(path, "MLmodel")) as f:
        notes = yaml.safe_load(f)["flavors"]["eas_savedmodel"]["conversion_notes"]
    return {
        "seconds": seconds,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "extra_memory_bytes": peak - rss_before,
        "artifact_bytes": _tree_size(path),
        "saved_model_pb_bytes": os.path.getsize(os.path.join(path, SAVED_MODEL_DIR, "saved_model.pb")),
        "streamed": "weights streamed from the source's variables/ bundle" in notes,
    }
