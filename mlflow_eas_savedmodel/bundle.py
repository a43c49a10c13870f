"""Carry this package inside a model, so an environment built from the model's requirements works.

``mlflow models serve --env-manager uv|virtualenv`` (and ``spark_udf``, ``mlflow models
build-docker``) build a fresh environment from the model's ``requirements.txt``. This package is
not on a public package index, so the model carries its wheel at ``wheels/<wheel file>`` and
``requirements.txt`` lists that relative path instead of ``mlflow-eas-savedmodel==X``.

When: by default (``save_model(..., bundle_package=None)``) whenever this package was *not*
installed from a package index, i.e. it is imported from a source checkout, an editable install,
a non-editable install from a clone (``pip install ".[cpu]"``) or a wheel file: exactly the cases
where ``mlflow-eas-savedmodel==X`` cannot be resolved by a new environment. Installed from an
index (no PEP 610 ``direct_url.json`` in its metadata), the pinned requirement resolves from that
same index, and nothing is bundled. ``True`` or a wheel path bundles always, ``False`` never.

Which wheel (:func:`default_bundle`): imported from a source checkout (editable, or the checkout
on ``sys.path``), the checkout's sources are built (:func:`build_wheel`); installed from a wheel
file that still exists, that file; otherwise (a clone installed with ``pip install .``, whose
``direct_url.json`` names a folder, or a wheel file since deleted) the wheel is rebuilt from the
installed files themselves (:func:`wheel_from_installed_files`): exactly the files the
distribution's ``RECORD`` lists, each checked against its recorded SHA-256, so the model carries
what this environment runs (the clone may have moved on since the install). Both are cached under
``$MLFLOW_EAS_SAVEDMODEL_CACHE/wheels/`` (by the sources' or the RECORD's SHA-256), so only the
first save after a change pays (a few seconds to build, well under one to repack); every later
save copies ~200 KB.

Why a wheel under ``wheels/`` referenced by a relative path: it is exactly what MLflow's own
:func:`mlflow.models.add_libraries_to_model` writes, and MLflow's environment managers install
the requirements from a copy of the model folder, so the path resolves wherever the model is
downloaded. Unlike ``add_libraries_to_model`` only this package is bundled (about 200 KB):
TensorFlow and MLflow still come from the index, pinned, instead of ~600 MB of wheels per model.
Unlike ``code_paths``, the wheel installs the package properly (metadata, console script,
version), so the environment's ``pip check`` and ``importlib.metadata`` see it.
"""

import base64
import glob
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

from mlflow_eas_savedmodel.errors import invalid_parameter_value

WHEELS_DIR = "wheels"
PACKAGE_NAME = "mlflow-eas-savedmodel"
_IMPORT_NAME = "mlflow_eas_savedmodel"
_logger = logging.getLogger(__name__)


def installed_from_index():
    """Whether this package was installed from a package index (so a new env can resolve it).

    PEP 610: an installer writes ``direct_url.json`` into the distribution's metadata when it
    installs from a URL, a local path, a wheel file or a VCS, editable installs included; an
    install from an index has none. Imported from a source checkout (editable, or the checkout
    on ``sys.path``, where a stale ``*.egg-info`` may shadow the real metadata) or not installed
    at all counts as not from an index.
    """
    if source_tree() is not None:
        return False
    try:
        distribution = importlib.metadata.distribution(PACKAGE_NAME)
    except importlib.metadata.PackageNotFoundError:
        return False
    return distribution.read_text("direct_url.json") is None


def _installed_wheel_file():
    """The local wheel file this package was installed from, if it still exists."""
    try:
        direct_url = json.loads(importlib.metadata.distribution(PACKAGE_NAME).read_text("direct_url.json") or "{}")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    url = direct_url.get("url", "")
    if not url.startswith("file:") or not url.endswith(".whl"):
        return None
    path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    return path if os.path.isfile(path) else None


def default_bundle():
    """What ``bundle_package=None`` means here: ``None`` (nothing), ``True`` (build) or a wheel.

    Nothing when installed from an index; the source checkout's wheel when imported from one;
    else the wheel file it was installed from. Without any of those, nothing is bundled and a
    warning says how to bundle a wheel by hand.
    """
    if installed_from_index():
        return None
    if source_tree() is not None:
        return True
    wheel = _installed_wheel_file()
    if wheel is not None:
        return wheel
    try:
        return wheel_from_installed_files()
    except Exception as e:  # noqa: BLE001 - the save goes on, naming what is missing
        reason = getattr(e, "message", None) or str(e)
    _logger.warning(
        "%s was not installed from a package index and its wheel cannot be rebuilt (%s), so the "
        "model names %s without carrying it: an environment built from its requirements (mlflow "
        "models serve --env-manager uv) will not resolve it. Pass "
        "bundle_package='path/to/%s-X-py3-none-any.whl'.",
        PACKAGE_NAME, reason, PACKAGE_NAME, _IMPORT_NAME,
    )
    return None


# Written by the installer, not part of a wheel (PEP 376, 610, 627); RECORD is written anew.
_INSTALLER_FILES = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def wheel_from_installed_files(out_dir=None):
    """This package's wheel, repacked from the installed distribution's files; returns its path.

    For an install whose wheel is not at hand (``pip install .`` from a clone: PEP 610's
    ``direct_url.json`` names a folder, not a wheel). The wheel holds what the distribution's
    ``RECORD`` lists under the package and its ``.dist-info`` (bytecode, console scripts and the
    installer's own files left out: the installer writes those again), each file checked against
    the SHA-256 ``RECORD`` gives it, and a new ``RECORD``. The bytes depend on the files only
    (sorted members, fixed timestamps), so the cache key, the old ``RECORD``'s SHA-256, names one
    wheel. ``out_dir=None``: the cache (``$MLFLOW_EAS_SAVEDMODEL_CACHE/wheels/installed-<sha>/``).

    Raises:
        MlflowException: no installed distribution, no ``RECORD``, or an installed file missing
            or changed since the install (then the wheel would not be what was installed).
    """
    distribution, record_text = _installed_distribution()
    members = _wheel_members(distribution)  # checked every time: a cached wheel must still match
    if out_dir is not None:
        return _repack(distribution, members, out_dir)
    from mlflow_eas_savedmodel.runtimes.venvs import cache_root

    digest = hashlib.sha256(record_text.encode()).hexdigest()
    folder = os.path.join(cache_root(), "wheels", f"installed-{digest}")
    return _cached_in(folder, lambda staging: _repack(distribution, members, staging))


def _installed_distribution():
    try:
        distribution = importlib.metadata.distribution(PACKAGE_NAME)
    except importlib.metadata.PackageNotFoundError as e:
        raise invalid_parameter_value(
            f"{PACKAGE_NAME} is not installed, so its wheel cannot be rebuilt from its files. "
            "Install it, or pass bundle_package='path/to/<the wheel>'."
        ) from e
    record_text = distribution.read_text("RECORD")
    if not record_text:
        raise invalid_parameter_value(
            f"The installed {PACKAGE_NAME} has no RECORD file, so its files are unknown. "
            "Reinstall it with pip or uv, or pass bundle_package='path/to/<the wheel>'."
        )
    return distribution, record_text


def _wheel_members(distribution):
    """``[(archive name, installed path)]`` of the files a wheel of ``distribution`` holds."""
    members = []
    for file in distribution.files or ():
        parts = file.parts
        top = parts[0]
        in_package = top == _IMPORT_NAME and "__pycache__" not in parts and not file.name.endswith(".pyc")
        in_metadata = top.endswith(".dist-info") and len(parts) >= 2 and not (
            len(parts) == 2 and parts[1] in _INSTALLER_FILES
        )
        if not (in_package or in_metadata):
            continue  # console scripts (../../bin/...), bytecode, the installer's files
        path = str(file.locate())
        if not os.path.isfile(path):
            raise invalid_parameter_value(
                f"The installed file {path!r} of {PACKAGE_NAME} is missing. Reinstall the "
                "package, or pass bundle_package='path/to/<the wheel>'."
            )
        if file.hash is not None and file.hash.mode == "sha256":
            with open(path, "rb") as f:
                actual = _record_digest(f.read())
            if actual != file.hash.value:
                raise invalid_parameter_value(
                    f"The installed file {path!r} of {PACKAGE_NAME} changed since the install "
                    "(its SHA-256 differs from RECORD's), so a wheel of it would not be what was "
                    "installed. Reinstall the package, or pass bundle_package='path/to/<the wheel>'."
                )
        members.append(("/".join(parts), path))
    if not any(name.startswith(f"{_IMPORT_NAME}/") for name, _ in members):
        raise invalid_parameter_value(
            f"The RECORD of the installed {PACKAGE_NAME} lists none of its modules (an editable "
            "install moved away from its checkout?). Reinstall the package, or pass "
            "bundle_package='path/to/<the wheel>'."
        )
    return sorted(members)


def _record_digest(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _repack(distribution, members, out_dir):
    """Writes the wheel of ``distribution``'s ``members`` into ``out_dir``; returns its path."""
    import zipfile

    (dist_info,) = {name.split("/")[0] for name, _ in members if name.split("/")[0].endswith(".dist-info")}
    tags = [line.split(":", 1)[1].strip() for line in (distribution.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    tag = tags[0] if len(tags) == 1 else "py3-none-any"
    version = distribution.version
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, f"{_IMPORT_NAME}-{version}-{tag}.whl")
    record = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, path in members:
            with open(path, "rb") as f:
                data = f.read()
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            wheel.writestr(info, data)
            record.append(f"{name},sha256={_record_digest(data)},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        info = zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=_ZIP_EPOCH)
        info.external_attr = 0o644 << 16
        wheel.writestr(info, "\n".join(record) + "\n")
    return target


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
        raise invalid_parameter_value(
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
            raise invalid_parameter_value(
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
        if _is_build_file(name):
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
        os.makedirs(wheels_dir, exist_ok=True)
        cached = _cached_wheel()
        wheel = shutil.copy(cached, os.path.join(wheels_dir, os.path.basename(cached)))
    else:
        source = os.fspath(bundle_package)
        name = os.path.basename(source)
        if not (os.path.isfile(source) and name.startswith(f"{_IMPORT_NAME}-") and name.endswith(".whl")):
            raise invalid_parameter_value(
                f"bundle_package={bundle_package!r} is not a wheel of {PACKAGE_NAME} "
                f"({_IMPORT_NAME}-<version>-py3-none-any.whl). Pass bundle_package=True to build "
                "it from the source checkout, or the path of such a wheel."
            )
        os.makedirs(wheels_dir, exist_ok=True)
        wheel = shutil.copy(source, os.path.join(wheels_dir, name))
    return f"{WHEELS_DIR}/{os.path.basename(wheel)}"


def _sources_digest(root):
    """SHA-256 of the files a wheel is built from (the selection :func:`_copy_sources` makes)."""
    digest = hashlib.sha256()
    top = sorted(name for name in os.listdir(root) if _is_build_file(name))
    package = os.path.join(root, _IMPORT_NAME)
    files = [os.path.join(root, name) for name in top]
    for folder, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files.extend(os.path.join(folder, n) for n in sorted(names) if not n.endswith(".pyc"))
    for path in files:
        digest.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _is_build_file(name):
    return name in ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in") or name.startswith(
        ("README", "LICENSE")
    )


def _cached_wheel():
    """The wheel of the current sources: built once per source state, then reused."""
    from mlflow_eas_savedmodel.runtimes.venvs import cache_root

    root = source_tree()
    if root is None:
        return build_wheel(tempfile.mkdtemp())  # raises with the prebuilt-wheel hint
    folder = os.path.join(cache_root(), "wheels", _sources_digest(root))
    return _cached_in(folder, build_wheel)


def _cached_in(folder, write_wheel):
    """The one wheel in the cache ``folder``; ``write_wheel(staging_dir)`` makes it the first time.

    The wheel is written into a staging folder beside ``folder`` and renamed into place, so a
    concurrent save sees either no wheel or a whole one (and the loser of a race uses the
    winner's).
    """
    found = glob.glob(os.path.join(folder, f"{_IMPORT_NAME}-*.whl"))
    if len(found) == 1:
        return found[0]
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    staging = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=".staging-")
    try:
        write_wheel(staging)
        try:
            os.rename(staging, folder)
        except OSError:  # another process won the race: use its wheel
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (wheel,) = glob.glob(os.path.join(folder, f"{_IMPORT_NAME}-*.whl"))
    return wheel


def is_package_requirement(line):
    """Whether a requirements line names this package (``mlflow-eas-savedmodel==0.1.0``...)."""
    name = line.strip().split(";")[0]
    for sep in ("==", ">=", "<=", "~=", "!=", "<", ">", "[", " "):
        name = name.split(sep)[0]
    return name.strip().lower().replace("_", "-") == PACKAGE_NAME

