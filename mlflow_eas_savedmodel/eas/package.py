"""``export``: the package EAS gets, one folder DEST holding everything an upload needs.

EAS's TensorFlow processors take ``model_path`` pointing at a folder holding
``saved_model.pb``, ``variables/`` (and ``assets/``), or at a ``.tar.gz``/``.zip`` with those
files at its root, and ``warm_up_data_path`` pointing at one warm-up request file in OSS: two
separate paths. So an export writes one folder, and nothing outside it::

    DEST/
      savedmodel/                    model_path (or savedmodel.tar.gz / savedmodel.zip: --archive)
      warm_up_<signature>.bin        warm_up_data_path, one per SignatureDef (--warmup)
      SHA256SUMS                     the manifest

Upload DEST as it is (``ossutil cp -r DEST oss://bucket/prefix/DEST/``) and point the service at
``.../DEST/savedmodel/`` and ``.../DEST/warm_up_serving_default.bin``. Two exports never share a
file, since each owns its DEST. The SavedModel folder (or archive) holds only what EAS expects:
the manifest, ``sha256sum`` format (``<hex>  <path relative to DEST>``, so ``sha256sum -c
SHA256SUMS`` checks it from DEST), lists every file written, and for an archive the archive
itself and every member as it will be after extracting it into ``DEST/savedmodel/``. The
SavedModel is checked against the SHA-256 recorded at save time first, so a changed file is
never uploaded. The deployment target (:mod:`mlflow_eas_savedmodel.deployments.client`) uses
the same layout under its OSS prefix (``<prefix>savedmodel/``, the warm-up file beside).

With ``warmup=True`` the upload is ready for both servers that read warm-up requests (see
:mod:`.warmup`): TF Serving's ``assets.extra/tf_serving_warmup_requests`` goes *inside* the
SavedModel (folder or archive), where TF Serving looks for it (old TensorFlow loaders ignore
``assets.extra/``), and EAS's ``warm_up_<signature>.bin`` files go into DEST beside it, since
the service config names that file separately. Archives are reproducible (sorted members,
fixed timestamps and owners), so the same model always uploads the same bytes.

:func:`write_eas_package` runs the steps in order: the destination (``_destination``), the
checked SavedModel (``_verified_saved_model``), the warm-up files, the folder or archive
(``_write_folder``, ``_write_archive``), the manifest, all into a temporary folder beside DEST
(``.DEST.partial-<random>``, unique per export) renamed to DEST when complete; a failure
removes it.
"""

import gzip
import os
import shutil
import tarfile
import tempfile
import zipfile

from mlflow_eas_savedmodel import integrity
from mlflow_eas_savedmodel.artifact_check import check_model_folder
from mlflow_eas_savedmodel.eas.mlmodel import download_model
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.layout import SAVED_MODEL_PB

ARCHIVE_FORMATS = {"tar.gz": ".tar.gz", "zip": ".zip"}
SAVED_MODEL_NAME = "savedmodel"  # DEST/savedmodel/, DEST/savedmodel.tar.gz
MANIFEST_NAME = "SHA256SUMS"
MANIFEST_SUFFIX = ".sha256"  # a manifest uploaded beside a SavedModel folder (the deployment target)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date zip can store


def _files_under(root):
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            yield os.path.relpath(path, root).replace(os.sep, "/"), path


def write_eas_package(model_uri, dest, archive=None, warmup=False):
    """Writes the SavedModel of ``model_uri`` into the new folder ``dest`` for upload to OSS.

    Args:
        model_uri: a model saved by this flavor (any MLflow model URI).
        dest: the new folder; it must not exist yet. Everything is written inside it.
        archive: ``None`` for ``dest/savedmodel/``, ``"tar.gz"`` or ``"zip"`` for
            ``dest/savedmodel.tar.gz``/``.zip`` with the SavedModel files at its root.
        warmup: also write the warm-up requests of every SignatureDef (saved input example,
            else synthesised inputs): TF Serving's inside the SavedModel, EAS's ``.bin`` in ``dest``.

    Returns:
        ``{"dest": dest, "path": the SavedModel folder or archive, "manifest": manifest path,
        "files": {SavedModel file: sha256}, "warmup": {signature: EAS .bin path}, "written":
        [every file written, relative to dest]}`` (``warmup`` empty unless asked).

    Example:
        >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
        >>> image = keras.Input((4,), name="image")
        >>> keras_model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
        >>> mes.save_model(keras_model, "model", input_example=np.ones((2, 4), "float32"))
        >>> from mlflow_eas_savedmodel.eas.package import write_eas_package
        >>> written = write_eas_package("model", "upload/mnist", archive="tar.gz")
        >>> written["path"]
        '.../upload/mnist/savedmodel.tar.gz'
        >>> written["written"]
        ['SHA256SUMS', 'savedmodel.tar.gz']
        >>> sorted(written["files"])
        ['saved_model.pb', 'variables/variables.data-00000-of-00001', 'variables/variables.index']
    """
    dest = _destination(dest, archive)
    if os.path.lexists(dest):
        raise invalid_parameter_value(
            f"{dest!r} already exists. Export to a new path, or delete it first."
        )
    local, _, conf = download_model(model_uri)
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)

    source, members, verified = _verified_saved_model(model_uri, local, conf)
    partial = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(dest)}.partial-")
    try:
        written = {"eas": {}, "tf_serving": None}
        if warmup:
            from mlflow_eas_savedmodel.eas.warmup import TF_SERVING_WARMUP_FILE, write_warmup_files

            written = write_warmup_files(local, os.path.join(partial, ".warmup"))
            members = sorted(members + [(TF_SERVING_WARMUP_FILE.replace(os.sep, "/"), written["tf_serving"])])
        hashes = {rel: verified.get(rel) or integrity.sha256_file(path) for rel, path in members}
        if archive is None:
            lines = _write_folder(source, os.path.join(partial, SAVED_MODEL_NAME), hashes, written["tf_serving"])
        else:
            name = SAVED_MODEL_NAME + ARCHIVE_FORMATS[archive]
            lines = _write_archive(archive, os.path.join(partial, name), members, hashes)
        bins = {}
        for signature, path in written["eas"].items():
            target = os.path.join(partial, os.path.basename(path))
            os.rename(path, target)
            lines.append(f"{integrity.sha256_file(target)}  {os.path.basename(target)}")
            bins[signature] = os.path.join(dest, os.path.basename(target))
        shutil.rmtree(os.path.join(partial, ".warmup"), ignore_errors=True)
        with open(os.path.join(partial, MANIFEST_NAME), "w") as f:
            f.write("\n".join(lines) + "\n")
        names = sorted(rel for rel, _ in _files_under(partial))
        os.rename(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    path = os.path.join(dest, SAVED_MODEL_NAME + (ARCHIVE_FORMATS[archive] if archive else ""))
    return {
        "dest": dest, "path": path, "manifest": os.path.join(dest, MANIFEST_NAME),
        "files": hashes, "warmup": bins, "written": names,
    }


def _destination(dest, archive):
    """The absolute folder path; an archive's suffix on it is refused (the archive is inside)."""
    if archive is not None and archive not in ARCHIVE_FORMATS:
        raise invalid_parameter_value(
            f"Unknown archive format {archive!r}. Use one of {sorted(ARCHIVE_FORMATS)}, or "
            "leave it out to write a folder."
        )
    dest = os.path.abspath(os.fspath(dest))
    suffix = next((s for s in ARCHIVE_FORMATS.values() if dest.endswith(s)), None)
    if suffix:
        raise invalid_parameter_value(
            f"DEST {dest!r} is the folder the export writes into (the archive goes inside it, "
            f"as {SAVED_MODEL_NAME}{ARCHIVE_FORMATS.get(archive, suffix)}). Pass "
            f"{dest[: -len(suffix)]!r} instead."
        )
    return dest


def _verified_saved_model(model_uri, local, conf):
    """The SavedModel folder and its files, every file checked against the hashes saved with it.

    Returns:
        ``(folder, [(relative path, path)], {relative path: sha256 recorded at save time})``.
    """
    source = conf.saved_model_path(local)
    integrity.refuse_symlinks(local)  # copytree would copy what a link points at
    # Never upload a model whose files changed since the save: EAS would serve them.
    conf.verify_files(
        source,
        unrecorded=f"The MLmodel file of {model_uri!r} records no file hashes "
        "(eas_savedmodel.file_sha256), so its files cannot be checked before upload. Re-log the "
        "model with this version of mlflow_eas_savedmodel.",
    )
    verified = conf.file_sha256  # verify just read every file and matched these
    # The pre-load check's other parts (ops policy, MLmodel vs graph): never upload what no load accepts.
    check_model_folder(local, conf, verify_integrity=False, where=model_uri)
    members = list(_files_under(source))
    if not any(rel == SAVED_MODEL_PB for rel, _ in members):
        raise invalid_parameter_value(
            f"{source!r} has no saved_model.pb: the model's artifact is incomplete."
        )
    return source, members, verified


def _write_folder(source, target, hashes, tf_serving_warmup=None):
    """Copies the SavedModel folder (TF Serving's warm-up file inside); returns its manifest lines."""
    shutil.copytree(source, target, symlinks=True)
    if tf_serving_warmup:
        from mlflow_eas_savedmodel.eas.warmup import TF_SERVING_WARMUP_FILE

        os.makedirs(os.path.join(target, os.path.dirname(TF_SERVING_WARMUP_FILE)))
        shutil.copy(tf_serving_warmup, os.path.join(target, TF_SERVING_WARMUP_FILE))
    name = os.path.basename(target)
    return [f"{h}  {name}/{rel}" for rel, h in hashes.items()]


def _write_archive(archive, target, members, hashes):
    """Writes the archive; returns its manifest lines (the archive, then every member as it is
    after extracting the archive into ``DEST/savedmodel/``)."""
    (_write_tar if archive == "tar.gz" else _write_zip)(target, members)
    lines = [f"{integrity.sha256_file(target)}  {os.path.basename(target)}"]
    lines += [f"{h}  {SAVED_MODEL_NAME}/{rel}" for rel, h in hashes.items()]
    return lines


def _write_tar(path, members):
    # gzip's header holds a file name and a time: fixed, so the bytes depend on the model only.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, file_path in members:
            info = tarfile.TarInfo(rel)
            info.size = os.path.getsize(file_path)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            with open(file_path, "rb") as f:
                tar.addfile(info, f)


def _write_zip(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, file_path in members:
            info = zipfile.ZipInfo(rel, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(file_path, "rb") as src, zf.open(info, "w") as out:
                shutil.copyfileobj(src, out, 1 << 20)


def verify_manifest(manifest):
    """Checks every file a manifest lists (relative to the manifest's folder).

    Returns the list of problems (``[]`` when every file is present and matches).
    """
    base = os.path.dirname(os.path.abspath(manifest))
    problems = []
    with open(manifest) as f:
        for line in f:
            if not line.strip():
                continue
            expected, rel = line.rstrip("\n").split("  ", 1)
            path = os.path.join(base, rel)
            if not os.path.exists(path):
                problems.append(f"missing: {rel}")
            elif integrity.sha256_file(path) != expected:
                problems.append(f"checksum mismatch: {rel}")
    return problems


def read_archive_names(path):
    """The member names of an exported archive (for checks before upload)."""
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return sorted(zf.namelist())
    with tarfile.open(path, "r:gz") as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())


__all__ = ["write_eas_package", "verify_manifest", "read_archive_names"]
