#!/usr/bin/env python
"""Regenerate mlflow_eas_savedmodel/runtimes/registries/tf-<ver>.json.gz for the EAS runtimes.

For each runtime (default: every one of ``RUNTIME_VERSIONS``, the rows of runtimes/table.py)
this builds (or reuses) the cached virtual environment with the official wheel on the matching old CPython
(:func:`mlflow_eas_savedmodel.runtimes.environments.ensure_runtime`) and runs
``scripts/dump_op_registry.py`` in it.  From a clean machine this needs only the pyenv (or
uv) interpreters 3.6, 3.7, 3.8 and 3.9 and PyPI access.

Usage (from the repository root, with the project's environment)::

    .venv/bin/python scripts/regenerate_registries.py            # every runtime
    .venv/bin/python scripts/regenerate_registries.py 1.15 2.3   # some
    .venv/bin/python scripts/regenerate_registries.py --check    # compare, write nothing
"""
import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mlflow_eas_savedmodel.runtimes import RUNTIME_VERSIONS  # noqa: E402
from mlflow_eas_savedmodel.runtimes.environments import ensure_runtime  # noqa: E402

DUMP = os.path.join(REPO, "scripts", "dump_op_registry.py")
OUT_DIR = os.path.join(REPO, "mlflow_eas_savedmodel", "runtimes", "registries")


def regenerate(tf_version: str, out_dir: str = OUT_DIR) -> str:
    env = ensure_runtime(tf_version)
    out = os.path.join(out_dir, "tf-%s.json.gz" % env.tf_version)
    child_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    child_env.pop("PYTHONPATH", None)
    # Run from a neutral directory so the repository is not importable by the old runtime.
    subprocess.run(
        [env.python, DUMP, "-o", out, "--wheel", env.wheel],
        check=True,
        cwd=tempfile.gettempdir(),
        env=child_env,
    )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("versions", nargs="*", default=None, help="runtime versions (default: all)")
    p.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare")
    args = p.parse_args(argv)
    versions = args.versions or list(RUNTIME_VERSIONS)
    out_dir = tempfile.mkdtemp(prefix="registries-") if args.check else OUT_DIR
    os.makedirs(out_dir, exist_ok=True)
    differ = []
    for v in versions:
        t0 = time.monotonic()
        out = regenerate(v, out_dir)
        print("tf-%s: %s (%.1f s)" % (v, out, time.monotonic() - t0), flush=True)
        if args.check:
            committed = os.path.join(OUT_DIR, os.path.basename(out))
            if not (os.path.exists(committed) and filecmp.cmp(out, committed, shallow=False)):
                differ.append(v)
    if args.check:
        print("differ: %s" % (", ".join(differ) or "none"))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
