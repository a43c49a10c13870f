#!/usr/bin/env python3.11
"""Set up `.venv` at the repo root (created once, reused after) and run the demo or the tests.

    python3.11 dev.py demo      # the main job, end to end, on a local sqlite store
    python3.11 dev.py test      # the whole test suite (what .ci/run runs), on 2 pytest-xdist
                                # workers, one test file per worker (-n 0 runs it serially)
    python3.11 dev.py bench     # the benchmark table (bench/RESULTS.md)
    python3.11 dev.py wheel     # dist/mlflow_eas_savedmodel-<version>-py3-none-any.whl, to install elsewhere
                                # (PEP 517 build, `pip wheel --no-deps`: no .venv, no dependencies)
    python3.11 dev.py setup     # only create/update .venv

Only Python 3.11 is needed: the rest comes from PyPI. Installs use `uv` (itself installed into
the venv) because TensorFlow's wheels are large and pip's resolver is slow on 2 cores.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import venv

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
BIN = os.path.join(VENV, "bin")
PYTHON = os.path.join(BIN, "python")
STAMP = os.path.join(VENV, ".mlflow-eas-savedmodel-installed")
# These depend on the full `tensorflow` wheel, which would download a second, GPU-capable
# TensorFlow next to tensorflow-cpu: installed without their dependencies, which
# tensorflow-cpu already provides.
NO_DEPS = [
    "tf-keras==2.21.0",
    "tensorflow-serving-api==2.21.0",
    # Recommender models the tests convert (tests/flavor/test_recsys_models.py); test-only.
    "tensorflow-recommenders==0.7.7",
    "keras-rs==0.4.0",
]
EXTRAS = "cpu,dev"


def _run(cmd, **kwargs):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def _fingerprint():
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "dev.py"):
        with open(os.path.join(ROOT, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def setup():
    """Creates `.venv` if missing and installs the package when its requirements changed."""
    if sys.version_info[:2] != (3, 11) and not os.path.exists(PYTHON):
        sys.exit(f"Python 3.11 is required to create .venv (this is {sys.version.split()[0]}).")
    if not os.path.exists(PYTHON):
        print(f"Creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    fingerprint = _fingerprint()
    if os.path.exists(STAMP) and open(STAMP).read() == fingerprint:
        return
    _run([PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "uv"])
    uv = [os.path.join(BIN, "uv"), "pip", "install", "--python", PYTHON]
    _run(uv + ["-e", f"{ROOT}[{EXTRAS}]"])
    _run(uv + ["--no-deps"] + NO_DEPS)
    with open(STAMP, "w") as f:
        f.write(fingerprint)


def wheel(out_dir=os.path.join(ROOT, "dist")):
    """Builds the wheel with pip's PEP 517 front end (``pip wheel --no-deps``), nothing else.

    The build runs in pip's isolated build environment (setuptools only, from the index or
    pip's cache): none of the package's dependencies are installed, and ``.venv`` is not
    needed. It builds from a clean copy of the sources, since an in-tree setuptools build
    reuses ``build/lib``, where a module deleted from the source would survive into the wheel
    (the same selection as ``mlflow_eas_savedmodel.bundle``). Returns the wheel's path.
    """
    python = sys.executable
    if subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        python = PYTHON  # this interpreter has no pip: use .venv's, if it exists
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "source")
        os.makedirs(source)
        for name in os.listdir(ROOT):
            if name in ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in") or name.startswith(("README", "LICENSE")):
                shutil.copy(os.path.join(ROOT, name), source)
        shutil.copytree(
            os.path.join(ROOT, "mlflow_eas_savedmodel"), os.path.join(source, "mlflow_eas_savedmodel"),
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        built = os.path.join(tmp, "wheel")
        _run([python, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
              "--wheel-dir", built, source])
        (name,) = os.listdir(built)
        os.makedirs(out_dir, exist_ok=True)
        target = os.path.join(out_dir, name)
        shutil.move(os.path.join(built, name), target)
    return target


def _env():
    env = dict(os.environ)
    # `mlflow models serve` starts `uvicorn` and `mlflow` by name: the venv must be on PATH
    # even when it is not activated.
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = VENV
    return env


def _workers(args):
    """Two workers, each given whole files (module fixtures are built once, servers and old
    runtimes overlap); arguments that choose the workers themselves win."""
    if any(a in ("-n", "--numprocesses", "--dist") or a.startswith(("-n", "--numprocesses=", "--dist="))
           or a == "no:xdist" for a in args):
        return []
    return ["-n", "2", "--dist", "loadfile"]


def main(argv):
    command, args = (argv[0], argv[1:]) if argv else ("help", [])
    if command not in ("setup", "demo", "test", "bench", "wheel"):
        print(__doc__)
        return 0 if command == "help" else 2
    if command == "wheel":
        print(wheel(*args[:1]))
        return 0
    setup()
    if command == "setup":
        return 0
    if command == "demo":
        cmd = [PYTHON, os.path.join(ROOT, "examples", "demo.py")] + args
    elif command == "bench":
        cmd = [PYTHON, "-m", "bench"] + args
    else:
        cmd = [PYTHON, "-m", "pytest"] + _workers(args) + args
    code = subprocess.run(cmd, cwd=ROOT, env=_env()).returncode
    if command == "test" and code == 5:
        print("pytest collected no tests: failing, a suite that runs nothing proves nothing.")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
