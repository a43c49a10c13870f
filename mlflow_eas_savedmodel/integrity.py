"""SHA-256 of every file of a SavedModel folder: recorded at save, checked at load.

A model promoted to production must never load quietly when a file of it was changed, cut short
by an interrupted copy, lost or added after the save. ``save_model`` records :func:`hash_tree`
of the SavedModel folder in the flavor's ``file_sha256`` entry of the MLmodel file, and every
load (``load_model``, ``mlflow.pyfunc.load_model``, ``mlflow models serve``) runs :func:`verify`
against it first; a model without recorded hashes fails unless the check is skipped. Symlinks
are refused (:func:`refuse_symlinks`) whether or not hashes are checked.

Hashing streams each file in 1 MiB blocks into a reused buffer: memory stays flat for
multi-GB ``variables.data`` shards and ``hashlib`` releases the GIL while it hashes, so the cost
is close to the disk's read speed (see ``tests/security/test_integrity.py`` for a measurement). For very
large models the check can be skipped:

* ``mlflow_eas_savedmodel.load_model(uri, verify_integrity=False)``;
* ``mlflow.pyfunc.load_model(uri, model_config={"verify_integrity": False})``;
* ``MLFLOW_EAS_SAVEDMODEL_VERIFY=0`` in the environment (e.g. of ``mlflow models serve``).

Each process remembers the digest of every file it hashed, keyed by the file's content facts
(device, inode, size, mtime and ctime, in nanoseconds): checking an unchanged file again costs
one ``stat``. Writing to a file, or resetting its mtime with ``os.utime``, sets its ctime to
the current time, which no call can set back, so a changed file never matches. A digest is
remembered only when the file's ctime and mtime are :data:`SETTLED_SECONDS` older than the moment
its reading started (as git treats "racily clean" files): timestamps are coarse (a kernel
tick; one second on some filesystems), and a file changed within the same tick as its last
change would otherwise keep its facts.

Example:
    >>> import os
    >>> from mlflow_eas_savedmodel import integrity
    >>> os.makedirs("savedmodel/variables")
    >>> with open("savedmodel/saved_model.pb", "wb") as f:
    ...     _ = f.write(b"a graph")
    >>> expected = integrity.hash_tree("savedmodel")
    >>> integrity.verify("savedmodel", expected)  # passes: nothing changed
    >>> with open("savedmodel/saved_model.pb", "ab") as f:
    ...     _ = f.write(b" changed")
    >>> integrity.verify("savedmodel", expected)
    Traceback (most recent call last):
    mlflow.exceptions.MlflowException: The SavedModel at 'savedmodel' does not match the SHA-256 hashes ...
"""

import hashlib
import os
import threading
import time

from mlflow_eas_savedmodel.errors import invalid_parameter_value

VERIFY_ENV = "MLFLOW_EAS_SAVEDMODEL_VERIFY"
# How much older than the start of its reading a file's last change must be for its digest to
# be remembered: above the coarsest timestamp granularity of the filesystems models live on.
SETTLED_SECONDS = 2.0
_BLOCK_BYTES = 1024 * 1024
_FALSE_WORDS = ("0", "false", "no", "off")
_MAX_LISTED = 10
_MAX_REMEMBERED = 65536
_digests = {}  # content facts -> hex SHA-256, for this process
_digests_lock = threading.Lock()


def content_facts(stat):
    """What identifies a file's content without reading it: device, inode, size, mtime, ctime."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def settled(stat, since_ns):
    """Whether ``stat``'s last change is :data:`SETTLED_SECONDS` older than ``since_ns``.

    Only then do its timestamps tell every later change apart (see the module docstring).
    """
    return max(stat.st_ctime_ns, stat.st_mtime_ns) <= since_ns - int(SETTLED_SECONDS * 1e9)


def sha256_file(path):
    """The hex SHA-256 of the file at ``path``, read in 1 MiB blocks.

    A file this process hashed before and that has not changed since (same content facts) is
    not read again (see the module docstring).
    """
    facts = content_facts(os.stat(path))
    remembered = _digests.get(facts)
    if remembered is not None:
        return remembered
    started = time.time_ns()
    with open(path, "rb", buffering=0) as f:
        before = os.fstat(f.fileno())
        digest = _read_sha256(f)
        after = os.fstat(f.fileno())
    if (
        content_facts(before) == content_facts(after) == facts
        and before.st_ino != 0  # some FUSE filesystems report no inodes: nothing to key on
        and settled(before, started)
    ):
        with _digests_lock:
            if len(_digests) >= _MAX_REMEMBERED:
                _digests.clear()
            _digests[facts] = digest
    return digest


def _read_sha256(f):
    digest = hashlib.sha256()
    buffer = bytearray(_BLOCK_BYTES)
    view = memoryview(buffer)
    while n := f.readinto(buffer):
        digest.update(view[:n])
    return digest.hexdigest()


def _relative_files(root):
    """Every file under ``root`` as a '/'-separated path relative to it, sorted."""
    files = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            full = os.path.join(folder, name)
            files.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return sorted(files)


def symlinks_under(root):
    """Every symlink under ``root`` (files and folders) as a '/'-separated relative path."""
    links = []
    for folder, dirs, names in os.walk(root):
        for name in (*dirs, *names):
            full = os.path.join(folder, name)
            if os.path.islink(full):
                links.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return sorted(links)


def refuse_symlinks(root):
    """Raises when ``root`` holds a symlink: an artifact's files must all be its own.

    A link (to a file or a folder) would make a load, a hash or an ``export`` read whatever it
    points at, outside the model, and ``os.walk`` does not even list a linked folder's files.

    Raises:
        MlflowException: naming the links (up to ten).
    """
    links = symlinks_under(root)
    if links:
        listed = ", ".join(repr(link) for link in links[:_MAX_LISTED])
        raise invalid_parameter_value(
            f"The model at {os.fspath(root)!r} contains symbolic links ({listed}); a model's files "
            "must be its own, so it is refused. Download or copy the model again without links "
            "(e.g. `cp -rL` into a new folder only if you trust where they point)."
        )


def hash_tree(directory):
    """``{relative path: hex SHA-256}`` of every file under ``directory`` (paths use '/').

    Example:
        >>> import os
        >>> from mlflow_eas_savedmodel.integrity import hash_tree
        >>> os.makedirs("savedmodel/variables")
        >>> with open("savedmodel/variables/variables.index", "wb") as f:
        ...     _ = f.write(b"")
        >>> hash_tree("savedmodel")
        {'variables/variables.index': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'}
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise invalid_parameter_value(
            f"{directory!r} is not a folder; cannot hash a SavedModel there."
        )
    return {rel: sha256_file(os.path.join(directory, rel)) for rel in _relative_files(directory)}


def hash_tree_reusing(directory, known):
    """:func:`hash_tree`, taking the digests in ``known`` instead of reading those files again.

    ``known`` (``{relative path: hex SHA-256}``) holds files whose digests were computed while
    they were written (``variables/`` shards of several GiB); a file it names that is not
    under ``directory`` is left out.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise invalid_parameter_value(
            f"{directory!r} is not a folder; cannot hash a SavedModel there."
        )
    return {
        rel: known[rel] if rel in known else sha256_file(os.path.join(directory, rel))
        for rel in _relative_files(directory)
    }


def verify(directory, expected):
    """Checks that ``directory`` holds exactly the files of ``expected``, with those SHA-256s.

    Args:
        directory: the SavedModel folder.
        expected: ``{relative path: hex SHA-256}`` as :func:`hash_tree` returned at save time.

    Raises:
        MlflowException: naming every missing, extra, changed or truncated file (up to ten).

    Example:
        >>> import keras, mlflow, mlflow_eas_savedmodel as mes
        >>> from mlflow_eas_savedmodel.integrity import verify
        >>> image = keras.Input((4,), name="image")
        >>> mes.save_model(keras.Model(image, keras.layers.Dense(3, name="scores")(image)), "model")
        >>> recorded = mlflow.models.Model.load("model").flavors["eas_savedmodel"]["file_sha256"]
        >>> verify("model/savedmodel", recorded)  # raises MlflowException if a file changed
    """
    directory = os.fspath(directory)
    if not isinstance(expected, dict) or not expected:
        raise invalid_parameter_value(
            f"The recorded file hashes of {directory!r} are missing or malformed "
            f"({type(expected).__name__}). Re-save the model, or skip the check with "
            f"verify_integrity=False."
        )
    if not os.path.isdir(directory):
        raise invalid_parameter_value(
            f"The SavedModel folder {directory!r} is missing. Re-download the model."
        )
    refuse_symlinks(directory)
    actual = set(_relative_files(directory))
    problems = [f"missing file {rel!r}" for rel in sorted(set(expected) - actual)]
    problems += [f"unexpected extra file {rel!r}" for rel in sorted(actual - set(expected))]
    for rel in sorted(set(expected) & actual):
        digest = sha256_file(os.path.join(directory, rel))
        if digest != expected[rel]:
            size = os.path.getsize(os.path.join(directory, rel))
            problems.append(
                f"file {rel!r} was changed or truncated ({size} bytes, SHA-256 {digest[:12]}..., "
                f"recorded {str(expected[rel])[:12]}...)"
            )
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise invalid_parameter_value(
            f"The SavedModel at {directory!r} does not match the SHA-256 hashes recorded when it "
            f"was saved:\n  {listed}{more}\nThe model files were modified or only partly copied: "
            "download or copy the model again, or re-log it. (To skip this check for a model you "
            f"trust, load with verify_integrity=False or set {VERIFY_ENV}=0.)"
        )


def should_verify(verify_integrity=None):
    """Whether to check hashes: ``verify_integrity`` if given, else ``$MLFLOW_EAS_SAVEDMODEL_VERIFY``.

    The check is on unless switched off explicitly.
    """
    if verify_integrity is None:
        value = os.environ.get(VERIFY_ENV, "1")
        return value.strip().lower() not in _FALSE_WORDS
    if isinstance(verify_integrity, str):
        return verify_integrity.strip().lower() not in _FALSE_WORDS
    return bool(verify_integrity)
