"""Carry this package inside a model, so an environment built from the model's requirements works.

``mlflow models serve --env-manager uv|virtualenv`` (and ``spark_udf``, ``mlflow models
build-docker``) build a fresh environment from the model's ``requirements.txt``. This package is
not on a package index, so ``save_model(..., bundle_package=True)`` puts its wheel into the model
at ``wheels/<wheel file>`` and lists that relative path in ``requirements.txt`` instead of
``mlflow-eas-savedmodel==X``.

Why a wheel under ``wheels/`` referenced by a relative path: it is exactly what MLflow's own
:func:`mlflow.models.add_libraries_to_model` writes, and MLflow's environment managers install
the requirements from a copy of the model folder, so the path resolves wherever the model is
downloaded. Unlike ``add_libraries_to_model`` only this package is bundled (about 200 KB):
TensorFlow and MLflow still come from the index, pinned, instead of ~600 MB of wheels per model.
Unlike ``code_paths``, the wheel installs the package properly (metadata, console script,
version), so the environment's ``pip check`` and ``importlib.metadata`` see it.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile

from mlflow_eas_savedmodel.errors import invalid

WHEELS_DIR = "wheels"
PACKAGE_NAME = "mlflow-eas-savedmodel"
_IMPORT_NAME = "mlflow_eas_savedmodel"


def source_tree():
    """The source checkout this package is imported from (holding its pyproject.toml), or None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pyproject = os.path.join(root, "pyproject.toml")
    if os.path.isfile(pyproject):
        with open(pyproject) as f:
            if f'name = "{PACKAGE_NAME}"' in f.read():
                return root
    return None


def build_wheel(out_dir):
    """Builds this package's wheel from its source checkout into ``out_dir``; returns its path.

    Uses ``pip wheel --no-deps --no-build-isolation`` with the running interpreter (setuptools is
    the build backend; no network needed) on a temporary copy of the sources.
    """
    root = source_tree()
    if root is None:
        raise invalid(
            f"Cannot build the {PACKAGE_NAME} wheel: the package is not imported from a source "
            "checkout. Pass a prebuilt wheel instead: "
            "save_model(..., bundle_package='path/to/mlflow_eas_savedmodel-X-py3-none-any.whl')."
        )
    with tempfile.TemporaryDirectory() as build_dir:
        # Build from a clean copy: an in-tree setuptools build reuses build/lib, where a module
        # deleted from the source would survive into the wheel.
        source = os.path.join(build_dir, "source")
        _copy_sources(root, source)
        command = [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
            "--quiet", "--wheel-dir", build_dir, source,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        wheels = glob.glob(os.path.join(build_dir, f"{_IMPORT_NAME}-*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise invalid(
                f"Building the {PACKAGE_NAME} wheel failed ({' '.join(command)}):\n"
                f"{(result.stderr or result.stdout)[-2000:]}\nBuild it yourself "
                "(`pip wheel --no-deps .`) and pass its path as bundle_package=."
            )
        os.makedirs(out_dir, exist_ok=True)
        target = os.path.join(out_dir, os.path.basename(wheels[0]))
        shutil.move(wheels[0], target)
    return target


def _copy_sources(root, destination):
    """The files setuptools needs to build the wheel: pyproject, readme/license, the package."""
    os.makedirs(destination)
    for name in os.listdir(root):
        if name in ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in") or name.startswith(
            ("README", "LICENSE")
        ):
            shutil.copy(os.path.join(root, name), destination)
    shutil.copytree(
        os.path.join(root, _IMPORT_NAME),
        os.path.join(destination, _IMPORT_NAME),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def bundle_into(model_dir, bundle_package):
    """Puts this package's wheel into ``model_dir/wheels``; returns the requirement line for it.

    Args:
        model_dir: the MLflow model folder being written.
        bundle_package: ``True`` to build the wheel from the source checkout, or the path of a
            prebuilt wheel of this package.

    Returns:
        ``"wheels/<wheel file>"``, the line that replaces ``mlflow-eas-savedmodel==X`` in
        ``requirements.txt`` (relative to the model folder, as MLflow's environment managers
        resolve it).
    """
    wheels_dir = os.path.join(model_dir, WHEELS_DIR)
    if bundle_package is True:
        wheel = build_wheel(wheels_dir)
    else:
        source = os.fspath(bundle_package)
        name = os.path.basename(source)
        if not (os.path.isfile(source) and name.startswith(f"{_IMPORT_NAME}-") and name.endswith(".whl")):
            raise invalid(
                f"bundle_package={bundle_package!r} is not a wheel of {PACKAGE_NAME} "
                f"({_IMPORT_NAME}-<version>-py3-none-any.whl). Pass bundle_package=True to build "
                "it from the source checkout, or the path of such a wheel."
            )
        os.makedirs(wheels_dir, exist_ok=True)
        wheel = shutil.copy(source, os.path.join(wheels_dir, name))
    return f"{WHEELS_DIR}/{os.path.basename(wheel)}"


def is_package_requirement(line):
    """Whether a requirements line names this package (``mlflow-eas-savedmodel==0.1.0``...)."""
    name = line.strip().split(";")[0]
    for sep in ("==", ">=", "<=", "~=", "!=", "<", ">", "[", " "):
        name = name.split(sep)[0]
    return name.strip().lower().replace("_", "-") == PACKAGE_NAME

