"""Export at any size: weights stream from the model into ``variables/``, never via a GraphDef.

Every source kind (Keras 3 and tf_keras with embedding tables, a TF1 session with plain and with
partitioned variables, a ``tf.train.Saver`` checkpoint, a SavedModel folder) is exported at
about 100 MiB in CI, loaded back with TF 2.21 and compared with the source, and (``runtime``
marker) run in the real TF 1.15 and 2.3 runtimes (all six with
``MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1``). The 100 MiB tables are larger than one
write part (:data:`~mlflow_eas_savedmodel.tensor_bundle.PART_BYTES`), so they are stored as row
slices, which the old loaders must put back together.

``MLFLOW_EAS_SAVEDMODEL_LARGE=1`` adds the same cases above protobuf's 2 GiB (two
``600000 x 512`` float32 tables, 2.29 GiB) and a graph whose own constants pass 2 GiB; run them
one at a time on a machine with ~12 GiB free, e.g.
``MLFLOW_EAS_SAVEDMODEL_LARGE=1 python -m pytest tests/flavor/test_export_at_any_size.py -k large``.
"""

import hashlib
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import runtime_versions
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import tensor_bundle
from mlflow_eas_savedmodel.graph import weights as weight_values
from support.mlmodel import read_flavor

LARGE = os.environ.get("MLFLOW_EAS_SAVEDMODEL_LARGE") == "1"
RUNTIME_VERSIONS = runtime_versions(ci_first=True)
# (tables, rows, dim): 97.7 MiB in one table (two write parts), or 2 x 1.14 GiB.
SIZES = {"100mib": (1, 100_000, 256)}
if LARGE:
    SIZES["large"] = (2, 600_000, 512)
SOURCES = ["keras3", "tf_keras", "session", "session_partitioned", "checkpoint", "saved_model"]
IDS_PER_ROW = 8


def _ids(rows):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, rows, size=(6, IDS_PER_ROW))
    ids[0, 0], ids[1, 0], ids[2, 0] = 0, rows - 1, rows // 2  # both ends and a slice boundary
    return ids


def _keras_model(keras, tables, rows, dim):
    keras.utils.set_random_seed(0)
    ids = keras.Input((IDS_PER_ROW,), dtype="int32", name="ids")
    pooled = [
        keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(rows, dim, name=f"table_{t}")(ids))
        for t in range(tables)
    ]
    merged = pooled[0] if tables == 1 else keras.layers.Add()(pooled)
    scores = keras.layers.Dense(4, name="scores")(merged)
    return keras.Model(ids, scores)


class SessionModel:
    """``scores = mean(lookup(tables, ids)) @ w * scale`` in a TF1 graph, in a live session."""

    def __init__(self, tf, tables, rows, dim, partitioned):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.ids = tf.compat.v1.placeholder(tf.int64, [None, IDS_PER_ROW], name="ids")
            pooled = []
            for t in range(tables):
                table = tf.compat.v1.get_variable(
                    f"table_{t}", [rows, dim],
                    initializer=tf.compat.v1.random_uniform_initializer(-1.0, 1.0, seed=t),
                    partitioner=tf.compat.v1.fixed_size_partitioner(4) if partitioned else None,
                )
                pooled.append(tf.reduce_mean(tf.nn.embedding_lookup(table, self.ids), axis=1))
            w = tf.compat.v1.get_variable(
                "w", [dim, 4], initializer=tf.compat.v1.random_normal_initializer(seed=9)
            )
            scale = tf.compat.v1.get_variable("scale", initializer=np.float32(0.5))
            self.scores = tf.identity(tf.matmul(tf.add_n(pooled), w) * scale, name="scores")
            init = tf.compat.v1.global_variables_initializer()
            self.saver = tf.compat.v1.train.Saver()
        self.sess = tf.compat.v1.Session(graph=self.graph)
        self.sess.run(init)

    def predict(self, ids):
        return self.sess.run(self.scores, {self.ids: ids})


def _export(source, size, workdir):
    """Exports one source; returns ``(model dir, ids, expected scores)``, the source freed."""
    import tensorflow as tf

    tables, rows, dim = SIZES[size]
    ids = _ids(rows)
    path = os.path.join(workdir, "model")
    if source in ("keras3", "tf_keras"):
        if source == "keras3":
            import keras
        else:
            keras = pytest.importorskip("tf_keras")
        model = _keras_model(keras, tables, rows, dim)
        expected = model.predict(ids.astype(np.int32), verbose=0)
        mes.save_model(model, path, inputs={"ids": model.input}, outputs={"scores": model.output})
        return path, ids.astype(np.int32), expected
    model = SessionModel(tf, tables, rows, dim, partitioned=source in ("session_partitioned", "checkpoint"))
    expected = model.predict(ids)
    try:
        if source.startswith("session"):
            mes.save_model(model.sess, path, inputs={"ids": model.ids}, outputs={"scores": model.scores})
        elif source == "checkpoint":
            with model.graph.as_default():
                prefix = model.saver.save(model.sess, os.path.join(workdir, "ckpt", "model.ckpt"))
            model.sess.close()
            mes.save_model(prefix, path, inputs={"ids": "ids:0"}, outputs={"scores": "scores:0"})
        else:
            folder = os.path.join(workdir, "source_savedmodel")
            with model.graph.as_default():
                tf.compat.v1.saved_model.simple_save(
                    model.sess, folder, inputs={"ids": model.ids}, outputs={"scores": model.scores}
                )
            model.sess.close()
            mes.save_model(folder, path)
    finally:
        model.sess.close()
    return path, ids, expected


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(source, size):
        if (source, size) not in cache:
            cache[(source, size)] = _export(source, size, str(tmp_path_factory.mktemp(f"{source}-{size}")))
        return cache[(source, size)]

    yield get
    for path, _, _ in cache.values():
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _params():
    return [
        pytest.param(source, size, id=f"{source}-{size}")
        for size in SIZES for source in SOURCES
    ]


@pytest.mark.parametrize("source,size", _params())
def test_every_source_exports_and_answers_like_the_source(exported, source, size):
    path, ids, expected = exported(source, size)
    saved_model = os.path.join(path, "savedmodel")
    # The graph holds no weight: only the variables/ bundle does.
    assert os.path.getsize(os.path.join(saved_model, "saved_model.pb")) < 1 << 20
    tables, rows, dim = SIZES[size]
    shards = [f for f in os.listdir(os.path.join(saved_model, "variables")) if ".data-" in f]
    data_bytes = sum(os.path.getsize(os.path.join(saved_model, "variables", f)) for f in shards)
    assert data_bytes >= tables * rows * dim * 4
    assert len(shards) >= 2, shards  # a table bigger than one write part was split
    handle = mes.load_model(path)
    np.testing.assert_allclose(handle.predict({"ids": ids})["scores"], expected, rtol=1e-5, atol=1e-5)


def test_variables_sha256s_computed_while_writing_match_the_files(exported):
    path, _, _ = exported("keras3", "100mib")
    recorded = read_flavor(path)["file_sha256"]
    saved_model = os.path.join(path, "savedmodel")
    files = sorted(
        os.path.relpath(os.path.join(d, n), saved_model).replace(os.sep, "/")
        for d, _, names in os.walk(saved_model) for n in names
    )
    assert sorted(recorded) == files
    for rel in files:
        with open(os.path.join(saved_model, rel), "rb") as f:
            assert recorded[rel] == hashlib.sha256(f.read()).hexdigest(), rel


@pytest.mark.runtime
@pytest.mark.parametrize("version", RUNTIME_VERSIONS)
@pytest.mark.parametrize("source,size", _params())
def test_every_source_runs_in_the_real_runtime(exported, source, size, version):
    from mlflow_eas_savedmodel.runtimes.runtime_process import run_in_runtime

    path, ids, expected = exported(source, size)
    run = run_in_runtime(
        os.path.join(path, "savedmodel"), version, {"serving_default": {"ids": ids}}, timeout=900
    )
    assert run.c_api_load_ok, run.c_api_error
    assert run.python_load_ok, run.python_error
    assert run.ok, run.report
    for outputs in (run.outputs, run.c_api_outputs):
        np.testing.assert_allclose(outputs["serving_default"]["scores"], expected, rtol=1e-5, atol=1e-5)


def test_savedmodel_whose_saver_renamed_its_variables_is_read_through_the_session(tf, tmp_path):
    """The bundle holds ``renamed/w``, not ``w``: the variables are restored, then streamed."""
    folder = str(tmp_path / "source")
    w_value = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        w = tf.compat.v1.get_variable("w", initializer=w_value, use_resource=False)
        y = tf.identity(tf.matmul(x, w), name="y")
        info = tf.compat.v1.saved_model.utils.build_tensor_info
        signature = tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
            {"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict"
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(folder)
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": signature},
                saver=tf.compat.v1.train.Saver({"renamed/w": w}),
            )
            builder.save()
    mes.save_model(folder, str(tmp_path / "model"))
    got = mes.load_model(str(tmp_path / "model")).predict({"x": np.eye(2, dtype=np.float32)})["y"]
    np.testing.assert_array_equal(got, w_value)


# ----------------------------------------------------------------------------- the bundle writer


def test_bundle_pieces_restore_to_the_values(tf, tmp_path):
    """Row slices, scalars, strings and ints written in small parts restore exactly."""
    rng = np.random.default_rng(0)
    arrays = {
        "big": rng.random((1000, 33), dtype=np.float32),
        "ints": np.arange(5000, dtype=np.int64).reshape(50, 100),
        "scalar": np.float32(2.5) * np.ones((), np.float32),
        "words": np.array([b"a", b"bb", b""], dtype=object),
        "empty": np.zeros((0, 4), np.float32),
    }
    values = {name: weight_values.ArrayValue(a) for name, a in arrays.items()}
    prefix = str(tmp_path / "variables")
    digests = tensor_bundle.write_variables(prefix, values, part_bytes=16 * 1024)
    files = sorted(os.listdir(tmp_path))
    assert sorted(digests) == files
    assert len([f for f in files if ".data-" in f]) > 5
    for name, digest in digests.items():
        assert digest == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    reader = tf.train.load_checkpoint(prefix)
    for name, array in arrays.items():
        restored = reader.get_tensor(name)
        assert restored.shape == array.shape, name
        assert restored.tolist() == array.tolist(), name


def test_progress_is_logged_on_writes_over_1_gib(tf, tmp_path, caplog):
    # 1 GiB to write, 4 bytes in memory: a broadcast view, read a piece at a time.
    values = {"ones": weight_values.ArrayValue(np.broadcast_to(np.float32(1.0), (1 << 28,)))}
    with caplog.at_level("INFO", logger="mlflow_eas_savedmodel.tensor_bundle"):
        tensor_bundle.write_variables(str(tmp_path / "variables"), values)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "Writing variables: 64.0 MiB of 1.0 GiB (6%)", lines
    assert lines[-1] == "Writing variables: 1.0 GiB of 1.0 GiB (100%)"
    assert len(lines) == 16


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB tmpfs (root only: the test is skipped where mount is not allowed)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_that_fills_up_during_the_write_leaves_nothing(tf, small_disk):
    values = {f"w{i}": weight_values.ArrayValue(np.full((1024, 1024), i, np.float32)) for i in range(4)}
    folder = small_disk / "variables"
    folder.mkdir()
    with pytest.raises(MlflowException, match="The disk filled up while the model's variables were written") as e:
        tensor_bundle.write_variables(str(folder / "variables"), values, part_bytes=1 << 20, check_free_space=False)
    assert "Free at least 16.0 MiB on that disk or save the model to another one" in e.value.message
    assert os.listdir(folder) == []


def test_save_to_a_disk_too_small_is_refused_and_leaves_no_folder(tf, small_disk):
    import keras

    model = _keras_model(keras, 1, 20_000, 256)  # 19.5 MiB of weights on an 8 MiB disk
    target = small_disk / "model"
    with pytest.raises(MlflowException, match="Not enough disk space for the model's variables: they need 19.5 MiB") as e:
        mes.save_model(model, str(target))
    assert "Free some space or save the model to another disk" in e.value.message
    assert os.listdir(small_disk) == []


# ----------------------------------------------------------------------- constants of the graph


def test_graph_constants_over_the_limit_are_refused_naming_them(tf):
    from mlflow_eas_savedmodel.graph.freeze import check_constants_fit

    graph = tf.Graph()
    with graph.as_default():
        tf.constant(np.ones((512, 1024), np.float32), name="lookup_values")  # 2 MiB
        tf.constant(np.ones((256, 1024), np.float32), name="bias_table")  # 1 MiB
        tf.constant(0.0, shape=[4096, 4096], name="splat")  # one element: 4 bytes in the proto
    check_constants_fit(graph, limit=4 << 20)  # splat counted at its real size: fits
    with pytest.raises(MlflowException) as e:
        check_constants_fit(graph, limit=2 << 20)
    message = e.value.message
    assert "holds 3.0 MiB of constants (not variables), more than the 2 GiB one GraphDef" in message
    assert message.index("'lookup_values' (2.0 MiB, float32 [512, 1024])") < message.index("'bias_table'")
    assert "`tf.Variable(value, trainable=False)`" in message


@pytest.mark.skipif(not LARGE, reason="set MLFLOW_EAS_SAVEDMODEL_LARGE=1 (needs ~9 GiB of memory)")
def test_large_session_constants_are_refused(tf, tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 1024], name="x")
        a = tf.constant(np.ones((300_000, 1024), np.float32), name="table_a")  # 1.14 GiB each
        b = tf.constant(np.ones((300_000, 1024), np.float32), name="table_b")
        y = tf.identity(tf.matmul(x, a, transpose_b=True) + tf.reduce_sum(b), name="y")
    with tf.compat.v1.Session(graph=graph) as sess:
        with pytest.raises(MlflowException, match="holds 2.3 GiB of constants .*'table_a' \\(1.1 GiB"):
            mes.save_model(sess, str(tmp_path / "model"), inputs={"x": x}, outputs={"y": y})
    assert not any(p.name.startswith(".model") or p.name == "model" for p in tmp_path.iterdir())
