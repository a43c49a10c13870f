"""``variables/``: weight values streamed from the model into a tensor bundle, in bounded pieces.

The bundle is the format ``Saver.save`` writes and every loader of TF 1.12-2.7 restores
(``variables.index`` + ``variables.data-NNNNN-of-MMMMM``). It is written with TensorFlow's own
``SaveV2`` op, so the file format is exactly TensorFlow's, in *parts* of at most
:data:`PART_BYTES`: each part is one ``SaveV2`` of the values it holds, read from the model
(:class:`~.graph.weights.WeightValue`) just before, and ``MergeV2Checkpoints`` joins the parts
into one bundle at the end (it renames each part's data file into a shard and writes one index).
A variable larger than a part is split along its first axis into row slices, stored as slices
of one tensor the way a partitioned variable is: loaders restore the whole tensor from them. So
the memory the write needs beyond the model is about one part, whatever the model's size.

Integrity: each data file is hashed (SHA-256, in a background thread, while the next part is
written) right after its ``SaveV2``, while it is still in the page cache; merging only renames
data files, so those digests are the final ones and multi-GiB models are never read back.

A disk too small for the values is refused before anything is written; a disk that fills up
during the write (or any write error) raises an ``MlflowException`` and leaves no part behind.
"""

import concurrent.futures
import logging
import os
import shutil

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.weights import slice_spec
from mlflow_eas_savedmodel.integrity import sha256_file

# Memory the write holds at once: one part's values (a read copy of each piece).
PART_BYTES = 64 * 1024 * 1024
# Exports at least this large log a progress line per part.
PROGRESS_FROM_BYTES = 1 << 30
INDEX_SUFFIX = ".index"

_logger = logging.getLogger(__name__)


def format_bytes(n):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _pieces(values, part_bytes):
    """``(name, start, stop, spec, nbytes)`` per piece: whole values, or row slices of big ones."""
    for name in sorted(values):
        value = values[name]
        nbytes = value.nbytes
        if nbytes <= part_bytes or len(value.shape) == 0 or value.shape[0] <= 1:
            yield name, 0, value.rows, "", nbytes
            continue
        row_bytes = nbytes // value.shape[0]
        step = max(1, part_bytes // max(row_bytes, 1))
        for start in range(0, value.shape[0], step):
            stop = min(start + step, value.shape[0])
            lengths = [stop - start, *value.shape[1:]]
            starts = [start] + [0] * (len(value.shape) - 1)
            yield name, start, stop, slice_spec(value.shape, starts, lengths), (stop - start) * row_bytes


def _parts(values, part_bytes):
    parts, current, size = [], [], 0
    for piece in _pieces(values, part_bytes):
        if current and size + piece[4] > part_bytes:
            parts.append(current)
            current, size = [], 0
        current.append(piece)
        size += piece[4]
    if current:
        parts.append(current)
    return parts


def _check_free_space(folder, needed):
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise invalid_parameter_value(
            f"Not enough disk space for the model's variables: they need {format_bytes(needed)} "
            f"and {folder!r} has {format_bytes(free)} free. Free some space or save the model to "
            "another disk."
        )


def _write_error(folder, error, written, total):
    message = getattr(error, "message", str(error))
    if "No space left" in message or "ENOSPC" in message or shutil.disk_usage(folder).free == 0:
        return invalid_parameter_value(
            f"The disk filled up while the model's variables were written to {folder!r} "
            f"({format_bytes(written)} of {format_bytes(total)} written). Nothing was kept. Free "
            f"at least {format_bytes(total)} on that disk or save the model to another one."
        )
    return invalid_parameter_value(f"Writing the model's variables to {folder!r} failed: {message}")


def write_variables(prefix, values, part_bytes=PART_BYTES, check_free_space=True):
    """Writes ``values`` as the tensor bundle ``prefix`` (``.../variables/variables``).

    Args:
        prefix: the bundle prefix; its folder must exist.
        values: variable name -> :class:`~.graph.weights.WeightValue`.
        part_bytes: at most this many bytes are read from the model per ``SaveV2``.
        check_free_space: refuse at once when the disk cannot hold the values.

    Returns:
        ``{file name: hex SHA-256}`` for every file written beside ``prefix``.

    Raises:
        MlflowException: the disk is too small or filled up, or a value could not be written;
            every file this call wrote is removed.
    """
    tf = import_tensorflow()
    from tensorflow.python.eager import context

    folder = os.path.dirname(prefix)
    parts = _parts(values, part_bytes)
    total = sum(piece[4] for part in parts for piece in part)
    if check_free_space:
        _check_free_space(folder, total)
    part_prefixes = [prefix] if len(parts) == 1 else [
        f"{prefix}_temp/part-{i:05d}" for i in range(len(parts))
    ]
    written = 0
    before = set(os.listdir(folder))
    hashing = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    digests = []
    try:
        # Eagerly, whatever the caller's default graph: inside `with tf.compat.v1.Session(graph=g)`
        # (how session sources are logged) raw ops would only add nodes to the user's graph.
        with context.eager_mode(), tf.device("/CPU:0"):
            for part, part_prefix in zip(parts, part_prefixes):
                tensors = [values[name].read(start, stop) for name, start, stop, _, _ in part]
                tf.raw_ops.SaveV2(
                    prefix=part_prefix,
                    tensor_names=[piece[0] for piece in part],
                    shape_and_slices=[piece[3] for piece in part],
                    tensors=tensors,
                )
                del tensors
                digests.append(hashing.submit(sha256_file, f"{part_prefix}.data-00000-of-00001"))
                written += sum(piece[4] for piece in part)
                if total >= PROGRESS_FROM_BYTES:
                    _logger.info(
                        "Writing variables: %s of %s (%d%%)",
                        format_bytes(written), format_bytes(total), 100 * written // max(total, 1),
                    )
            # Before the merge renames the files the hashing thread reads.
            digests = [d.result() for d in digests]
            if len(parts) > 1:
                tf.raw_ops.MergeV2Checkpoints(
                    checkpoint_prefixes=part_prefixes, destination_prefix=prefix, delete_old_dirs=True
                )
    except (tf.errors.OpError, OSError) as e:
        hashing.shutdown(wait=True, cancel_futures=True)
        _remove_new_files(folder, before, prefix)
        raise _write_error(folder, e, written, total) from e
    except BaseException:
        hashing.shutdown(wait=True, cancel_futures=True)
        _remove_new_files(folder, before, prefix)
        raise
    hashing.shutdown(wait=True)
    base = os.path.basename(prefix)
    shards = {f"{base}.data-{i:05d}-of-{len(parts):05d}": d for i, d in enumerate(digests)}
    present = {f for f in os.listdir(folder) if f.startswith(f"{base}.data-")}
    if present != set(shards):  # not the layout MergeV2Checkpoints is known to write: hash anew
        shards = {f: sha256_file(os.path.join(folder, f)) for f in present}
    shards[base + INDEX_SUFFIX] = sha256_file(prefix + INDEX_SUFFIX)
    return shards


def _remove_new_files(folder, before, prefix):
    shutil.rmtree(prefix + "_temp", ignore_errors=True)
    for name in set(os.listdir(folder)) - before:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)

