"""``export``: the package EAS gets, the plain SavedModel folder or archive it reads from OSS.

EAS's TensorFlow processors take ``model_path`` pointing at a folder holding
``saved_model.pb``, ``variables/`` (and ``assets/``), or at a ``.tar.gz``/``.zip`` with those
files at its root. Anything else inside (an MLmodel file, a manifest) is not expected there,
so the integrity manifest goes *beside* the folder or archive: ``<dest>.sha256``, in
``sha256sum`` format (``<hex>  <path>``), so ``sha256sum -c`` checks it from the folder that
holds it. For an archive it lists the archive itself and every member as it will be after
extracting the archive in that folder. The SavedModel is checked against the SHA-256 recorded
at save time first, so a changed file is never uploaded.

With ``warmup=True`` the upload is ready for both servers that read warm-up requests (see
:mod:`.warmup`): TF Serving's ``assets.extra/tf_serving_warmup_requests`` goes *inside* the
exported SavedModel (folder or archive), where TF Serving looks for it (old TensorFlow loaders
ignore ``assets.extra/``), and EAS's ``warm_up_<signature>.bin`` files go *beside* it, since the
service config names that file separately (``warm_up_data_path``). The manifest lists them
all. Archives are reproducible (sorted members, fixed timestamps and owners), so the same model
always uploads the same bytes.

:func:`write_eas_package` runs the steps in order: the destination (``_destination``), the
checked SavedModel (``_verified_saved_model``), the warm-up files, the folder or archive
(``_write_folder``, ``_write_archive``) written as ``<dest>.partial`` and renamed when complete,
then the manifest; a failure removes what it wrote (``_remove_partial``).
"""

import gzip
import os
import shutil
import tarfile
import zipfile

from mlflow_eas_savedmodel import integrity
from mlflow_eas_savedmodel.artifact_check import check_model_folder
from mlflow_eas_savedmodel.eas.mlmodel import download_model
from mlflow_eas_savedmodel.errors import invalid_parameter_value

ARCHIVE_FORMATS = {"tar.gz": ".tar.gz", "zip": ".zip"}
MANIFEST_SUFFIX = ".sha256"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date zip can store


def _files_under(root):
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            yield os.path.relpath(path, root).replace(os.sep, "/"), path


def write_eas_package(model_uri, dest, archive=None, warmup=False):
    """Writes the SavedModel of ``model_uri`` to ``dest`` for upload to OSS, plus its manifest.

    Args:
        model_uri: a model saved by this flavor (any MLflow model URI).
        dest: the new folder, or the archive path (``.tar.gz``/``.zip`` is appended if
            missing). It must not exist yet.
        archive: ``None`` for a folder, ``"tar.gz"`` or ``"zip"`` for an archive with the
            SavedModel files at its root.
        warmup: also write the warm-up requests of every SignatureDef (saved input example,
            else synthesised inputs): TF Serving's inside the SavedModel, EAS's ``.bin`` beside.

    Returns:
        ``{"path": folder or archive, "manifest": manifest path, "files": {path: sha256},
        "warmup": {signature: EAS .bin path}}`` (``warmup`` empty unless asked).

    Example:
        >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
        >>> image = keras.Input((4,), name="image")
        >>> keras_model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
        >>> mes.save_model(keras_model, "model", input_example=np.ones((2, 4), "float32"))
        >>> from mlflow_eas_savedmodel.eas.package import write_eas_package
        >>> written = write_eas_package("model", "upload/mnist", archive="tar.gz")
        >>> written["path"]
        '.../upload/mnist.tar.gz'
        >>> sorted(written["files"])
        ['saved_model.pb', 'variables/variables.data-00000-of-00001', 'variables/variables.index']
    """
    dest = _destination(dest, archive)
    manifest = dest + MANIFEST_SUFFIX
    local, _, conf = download_model(model_uri)
    bins = _eas_warmup_targets(dest, conf) if warmup else {}
    for path in (dest, manifest, *bins.values()):
        if os.path.exists(path):
            raise invalid_parameter_value(
                f"{path!r} already exists. Export to a new path, or delete it first."
            )
    os.makedirs(os.path.dirname(dest), exist_ok=True)

    source, members, verified = _verified_saved_model(model_uri, local, conf)
    partial = dest + ".partial"
    warmup_dir = partial + "-warmup"
    try:
        written = {"eas": {}, "tf_serving": None}
        if warmup:
            from mlflow_eas_savedmodel.eas.warmup import TF_SERVING_WARMUP_FILE, write_warmup_files

            written = write_warmup_files(local, warmup_dir)
            members = sorted(members + [(TF_SERVING_WARMUP_FILE.replace(os.sep, "/"), written["tf_serving"])])
        hashes = {rel: verified.get(rel) or integrity.sha256_file(path) for rel, path in members}
        name = os.path.basename(dest)
        if archive is None:
            lines = _write_folder(source, partial, name, hashes, written["tf_serving"])
        else:
            lines = _write_archive(archive, partial, name, members, hashes)
        for signature, target in bins.items():
            shutil.copy(written["eas"][signature], target)
            lines.append(f"{integrity.sha256_file(target)}  {os.path.basename(target)}")
        os.rename(partial, dest)
    except BaseException:
        _remove_partial(partial, bins.values())
        raise
    finally:
        shutil.rmtree(warmup_dir, ignore_errors=True)
    with open(manifest, "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"path": dest, "manifest": manifest, "files": hashes, "warmup": bins}


def _destination(dest, archive):
    """The absolute folder or archive path, the archive's suffix appended if missing."""
    if archive is not None and archive not in ARCHIVE_FORMATS:
        raise invalid_parameter_value(
            f"Unknown archive format {archive!r}. Use one of {sorted(ARCHIVE_FORMATS)}, or "
            "leave it out to write a folder."
        )
    dest = os.path.abspath(os.fspath(dest))
    if archive and not dest.endswith(ARCHIVE_FORMATS[archive]):
        dest += ARCHIVE_FORMATS[archive]
    return dest


def _eas_warmup_targets(dest, conf):
    """``{signature: path}`` of the EAS ``.bin`` files, beside ``dest``."""
    from mlflow_eas_savedmodel.eas.warmup import eas_warmup_file_name

    return {
        name: os.path.join(os.path.dirname(dest), eas_warmup_file_name(name))
        for name in conf.signature_defs
    }


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
    if not any(rel == "saved_model.pb" for rel, _ in members):
        raise invalid_parameter_value(
            f"{source!r} has no saved_model.pb: the model's artifact is incomplete."
        )
    return source, members, verified


def _write_folder(source, partial, name, hashes, tf_serving_warmup=None):
    """Copies the SavedModel folder (TF Serving's warm-up file inside); returns its manifest lines."""
    shutil.copytree(source, partial, symlinks=True)
    if tf_serving_warmup:
        from mlflow_eas_savedmodel.eas.warmup import TF_SERVING_WARMUP_FILE

        os.makedirs(os.path.join(partial, os.path.dirname(TF_SERVING_WARMUP_FILE)))
        shutil.copy(tf_serving_warmup, os.path.join(partial, TF_SERVING_WARMUP_FILE))
    return [f"{h}  {name}/{rel}" for rel, h in hashes.items()]


def _write_archive(archive, partial, name, members, hashes):
    """Writes the archive; returns its manifest lines (the archive, then every member)."""
    (_write_tar if archive == "tar.gz" else _write_zip)(partial, members)
    lines = [f"{integrity.sha256_file(partial)}  {name}"]
    lines += [f"{h}  {rel}" for rel, h in hashes.items()]
    return lines


def _remove_partial(partial, bins):
    """Removes what a failed export wrote (the partial folder or archive, the ``.bin`` copies)."""
    for target in bins:
        if os.path.exists(target):
            os.remove(target)
    if os.path.isdir(partial):
        shutil.rmtree(partial, ignore_errors=True)
    elif os.path.exists(partial):
        os.remove(partial)


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
