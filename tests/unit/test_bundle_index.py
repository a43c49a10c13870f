"""``variables/`` rows read straight from the ``.data`` shard match what TensorFlow restores.

:mod:`mlflow_eas_savedmodel.graph.bundle_index` parses the bundle's ``.index`` table itself, so
these tests compare every entry of real bundles (a Saver's, with enough keys for several index
blocks, and a Keras ``model.export()``'s) with ``tf.train.load_checkpoint``, whole and by rows,
and check that what it does not read (strings, damaged indexes) falls back to ``RestoreV2``.
"""

import numpy as np
import pytest

from mlflow_eas_savedmodel.graph import bundle_index
from mlflow_eas_savedmodel.graph.weights import BundleValue

DTYPES = (np.float32, np.int64, np.float16, np.bool_, np.int8)


@pytest.fixture(scope="module")
def saver_bundle(tmp_path_factory, tf):
    prefix = str(tmp_path_factory.mktemp("bundle") / "model.ckpt")
    rng = np.random.default_rng(0)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        for i in range(300):  # ~14 KiB of index: several 4 KiB data blocks
            dtype = DTYPES[i % len(DTYPES)]
            shape = [(5, 3), (7,), (), (2, 2, 3), (4, 1)][i % 5]
            value = (rng.random(shape) * 10).astype(dtype) if dtype != np.bool_ else rng.random(shape) > 0.5
            tf.compat.v1.get_variable(f"scope_{i:03d}/variable_with_a_long_name_{i}", initializer=value)
        tf.compat.v1.get_variable("words", initializer=tf.constant(["a", "bb"]))
        sess.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(sess, prefix, write_meta_graph=False)
    return prefix


def _check_every_entry(tf, prefix):
    reader = tf.train.load_checkpoint(prefix)
    index = bundle_index.read_index(prefix)
    assert index is not None
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    direct = 0
    for key, shape in shapes.items():
        entry = bundle_index.BundleFile.of(prefix, index, key, shape, dtypes[key])
        if dtypes[key] == tf.string:
            assert entry is None  # strings are not stored as fixed-size rows
            continue
        assert entry is not None, key
        expected = reader.get_tensor(key)
        rows = shape[0] if shape else 1
        np.testing.assert_array_equal(np.asarray(entry.read(0, rows)), expected, err_msg=key)
        if shape and shape[0] > 2:
            np.testing.assert_array_equal(np.asarray(entry.read(1, shape[0] - 1)), expected[1:-1], err_msg=key)
        direct += 1
    return direct


def test_every_entry_of_a_saver_bundle_reads_as_tensorflow_restores_it(tf, saver_bundle):
    assert _check_every_entry(tf, saver_bundle) == 300


def test_every_entry_of_a_keras_export_reads_as_tensorflow_restores_it(tf, tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    ids = keras.Input((3,), dtype="int32", name="ids")
    x = keras.layers.Flatten()(keras.layers.Embedding(50, 4)(ids))
    keras.Model(ids, keras.layers.Dense(2)(x)).export(str(tmp_path / "export"), verbose=False)
    assert _check_every_entry(tf, str(tmp_path / "export" / "variables" / "variables")) >= 3


def test_a_damaged_index_falls_back_to_restore_v2(tf, saver_bundle, tmp_path):
    import shutil

    copy = str(tmp_path / "model.ckpt")
    shutil.copy(saver_bundle + ".data-00000-of-00001", copy + ".data-00000-of-00001")
    with open(saver_bundle + ".index", "rb") as f:
        data = bytearray(f.read())
    data[-1] ^= 0xFF  # the table's magic number
    with open(copy + ".index", "wb") as f:
        f.write(data)
    assert bundle_index.read_index(copy) is None
    key = "scope_000/variable_with_a_long_name_0"
    value = BundleValue(saver_bundle, key, (5, 3), tf.float32)
    expected = tf.train.load_checkpoint(saver_bundle).get_tensor(key)
    np.testing.assert_array_equal(np.asarray(value.read(1, 4)), expected[1:4])
    assert value._direct  # the intact bundle is read directly
