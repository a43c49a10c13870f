"""SavedModels that the cached old runtimes wrote themselves, built once and cached.

``old_model("1.15", "wide_deep")`` runs ``tests/support/old_runtime_models.py`` with the TF 1.15
runtime's own interpreter (built by :func:`ensure_runtime`) unless the cache already holds that
model, and returns ``OldModel(export_dir, feeds, expected)``: the export as that TensorFlow
wrote it, what its clients send, and what that TensorFlow answered. The cache lives under
``<cache root>/old-runtime-models/<version>-<hash of the script>/`` (``$MLFLOW_EAS_SAVEDMODEL_CACHE``
moves it with the runtimes), so editing the script rebuilds.
"""

import collections
import fcntl
import hashlib
import os
import subprocess

import numpy as np

from mlflow_eas_savedmodel.runtimes._npz_format import split_array_name, unpack_arrays
from mlflow_eas_savedmodel.runtimes.environments import ensure_runtime
from mlflow_eas_savedmodel.runtimes.venvs import cache_root
from support.paths import REPO

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "old_runtime_models.py")
FORMAT = str(REPO / "mlflow_eas_savedmodel" / "runtimes" / "_npz_format.py")

OldModel = collections.namedtuple("OldModel", "export_dir feeds expected")


def _cache_dir(tf_version):
    digest = hashlib.sha256()
    for path in (SCRIPT, FORMAT):
        with open(path, "rb") as fh:
            digest.update(fh.read())
    return os.path.join(cache_root(), "old-runtime-models", f"{tf_version}-{digest.hexdigest()[:12]}")


def _read(path):
    out = {}
    with np.load(path, allow_pickle=False) as data:
        for name, value in unpack_arrays(data).items():
            sig, key = split_array_name(name)
            out.setdefault(sig, {})[key] = value
    return out


def build_old_models(tf_version, names):
    """Builds what the cache lacks of ``names`` in ONE run of the runtime's interpreter."""
    folder = _cache_dir(tf_version)
    os.makedirs(folder, exist_ok=True)
    # Test workers run in parallel (pytest-xdist): one builds, the others wait and then find it.
    with open(folder + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_missing(tf_version, folder, names)
    return {n: old_model(tf_version, n) for n in names}


def _build_missing(tf_version, folder, names):
    missing = [n for n in names if not os.path.isdir(os.path.join(folder, n))]
    if missing:
        env = ensure_runtime(tf_version)
        # TF2_BEHAVIOR=1 is set by importing TF 2.21 here; it would make TF 1.15 eager.
        environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "TF2_BEHAVIOR")}
        environ.update(CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONNOUSERSITE="1")
        proc = subprocess.run(
            [env.python, SCRIPT, folder, *missing], capture_output=True, text=True, env=environ,
            timeout=900,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"TF {tf_version} could not build {missing}:\n{proc.stderr[-4000:]}")


def old_model(tf_version, name):
    folder = os.path.join(_cache_dir(tf_version), name)
    if not os.path.isdir(folder):
        return build_old_models(tf_version, [name])[name]
    return OldModel(
        os.path.join(folder, "export"), _read(os.path.join(folder, "feeds.npz")),
        _read(os.path.join(folder, "expected.npz")),
    )
