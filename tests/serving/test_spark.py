"""Batch scoring with ``mlflow.pyfunc.spark_udf`` on a local Spark (``local[2]``).

Array columns feed a one-input SignatureDef; a struct of named columns feeds a multi-input one
(``params={"signature_name": ...}`` picks it) and a struct result type receives its several
outputs. Every result is compared with ``mlflow.pyfunc``'s prediction of the same rows.

Needs the optional extra ``pyspark`` and a Java 17+ runtime; skipped otherwise. About a minute
on 2 cores (the Spark JVM and each Python worker's TensorFlow import dominate).
"""

import os
import shutil
import sys
from typing import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.registry import promote
from support.stores import sqlite_store

pyspark = pytest.importorskip(
    "pyspark", reason="pyspark is an optional extra: pip install 'mlflow-eas-savedmodel[spark]'"
)

ROWS = 40
X = np.random.default_rng(0).random((ROWS, 4), dtype=np.float32)
A = np.random.default_rng(1).normal(size=(ROWS, 2)).astype(np.float32)
B = np.arange(ROWS, dtype=np.int64) - 7


@pytest.fixture(scope="module")
def spark():
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("Spark needs a Java 17+ runtime (java on PATH or JAVA_HOME)")
    from pyspark.sql import SparkSession

    # Spark's Python workers start `python3` from PATH unless told otherwise: use this venv.
    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("mlflow-eas-savedmodel-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.bind", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        if previous is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = previous


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with sqlite_store(tmp_path_factory.mktemp("spark-store"), "spark") as uri:
        yield uri


@pytest.fixture(scope="module")
def mnist(store, mlp):
    with mlflow.start_run():
        mes.log_model(mlp, name="model", registered_model_name="mnist")
    promote("mnist", 1)
    return "models:/mnist@champion"


@pytest.fixture(scope="module")
def multi(store, tf):
    """``serving_default``: image -> scores; ``other``: (a, b) -> (total, doubled)."""
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.float32, [None, 4], name="image")
        weights = tf.compat.v1.get_variable("w", initializer=np.eye(4, 3, dtype=np.float32) * 3)
        scores = tf.identity(tf.matmul(image, weights), name="scores")
        a = tf.compat.v1.placeholder(tf.float32, [None, 2], name="a")
        b = tf.compat.v1.placeholder(tf.int64, [None], name="b")
        total = tf.identity(tf.reduce_sum(a, axis=1) + tf.cast(b, tf.float32), name="total")
        doubled = tf.identity(a * 2.0, name="doubled")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            with mlflow.start_run():
                mes.log_model(
                    session,
                    name="model",
                    registered_model_name="multi",
                    signatures={
                        "serving_default": {"inputs": {"image": image}, "outputs": {"scores": scores}},
                        "other": {"inputs": {"a": a, "b": b}, "outputs": {"total": total, "doubled": doubled}},
                    },
                )
    promote("multi", 1)
    return "models:/multi@champion"


def _images(spark):
    return spark.createDataFrame([(i, x.tolist()) for i, x in enumerate(X)], "id long, image array<float>")


def _scored(frame, column):
    """The scored column as a numpy array, in ``id`` order."""
    rows = frame.orderBy("id").toPandas()[column]
    return np.stack(rows.to_numpy())


def test_array_column_scores_like_pyfunc(spark, mnist, mlp):
    udf = mlflow.pyfunc.spark_udf(spark, mnist, result_type="array<float>", env_manager="local")
    scored = _scored(_images(spark).repartition(2).withColumn("scores", udf("image")), "scores")
    expected = mlflow.pyfunc.load_model(mnist).predict(X)
    np.testing.assert_allclose(scored, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(scored, mlp(X).numpy(), rtol=1e-5, atol=1e-6)


def test_readme_spark_udf_example_runs_as_written(spark, mnist, mlp):
    """The README's line, without result_type: MLflow infers array<float> from the signature's
    output column (from a (-1, 3) TensorSpec it inferred array<array<float>> and every row failed
    with "'numpy.float32' object is not iterable")."""
    udf = mlflow.pyfunc.spark_udf(spark, "models:/mnist@champion")
    assert udf.metadata.get_output_schema().inputs[0].name == "scores"
    scored = _scored(_images(spark).repartition(2).withColumn("scores", udf("image")), "scores")
    np.testing.assert_allclose(scored, mlp(X).numpy(), rtol=1e-5, atol=1e-6)


def test_multi_signature_model_default_signature(spark, multi):
    udf = mlflow.pyfunc.spark_udf(spark, multi, result_type="array<float>", env_manager="local")
    scored = _scored(_images(spark).withColumn("scores", udf("image")), "scores")
    np.testing.assert_allclose(scored, mlflow.pyfunc.load_model(multi).predict(X), rtol=1e-6)
    np.testing.assert_allclose(scored, X @ (np.eye(4, 3) * 3), rtol=1e-6)


def test_struct_of_named_inputs_feeds_a_multi_input_signature(spark, multi):
    from pyspark.sql import functions as F

    frame = spark.createDataFrame(
        [(i, a.tolist(), int(b)) for i, (a, b) in enumerate(zip(A, B))], "id long, a array<float>, b long"
    ).repartition(2)
    udf = mlflow.pyfunc.spark_udf(
        spark, multi, result_type="total float, doubled array<float>", env_manager="local",
        params={"signature_name": "other"},
    )
    scored = frame.withColumn("result", udf(F.struct("a", "b"))).select("id", "result.total", "result.doubled")
    expected = mlflow.pyfunc.load_model(multi).predict({"a": A, "b": B}, params={"signature_name": "other"})
    np.testing.assert_allclose(_scored(scored, "total"), expected["total"], rtol=1e-6)
    np.testing.assert_allclose(_scored(scored, "doubled"), expected["doubled"], rtol=1e-6)
    np.testing.assert_allclose(_scored(scored, "total"), A.sum(axis=1) + B, rtol=1e-5)


def test_wrong_shape_fails_the_job_with_the_flavor_message(spark, multi):
    from pyspark.sql import functions as F

    frame = spark.createDataFrame([([1.0, 2.0, 3.0], 1)], "a array<float>, b long")
    udf = mlflow.pyfunc.spark_udf(
        spark, multi, result_type="total float, doubled array<float>", env_manager="local",
        params={"signature_name": "other"},
    )
    with pytest.raises(Exception, match=r"Input 'a' of signature 'other' has shape \(1, 3\), but the signature expects \(None, 2\)"):
        frame.withColumn("result", udf(F.struct("a", "b"))).collect()


def _worker_heap_after_a_load(spark, model_uri, freeze_env):
    """Per task, in real Spark Python workers: load the model through ``mlflow.pyfunc`` with
    ``$MLFLOW_EAS_SAVEDMODEL_SPARK_GC_FREEZE`` set to ``freeze_env`` (None: unset) on an unfrozen
    heap, and report ``[objects frozen before, objects frozen after]``; the worker is left frozen."""
    from pyspark.sql.functions import pandas_udf

    local_path = mlflow.artifacts.download_artifacts(model_uri)

    @pandas_udf("array<long>")
    def probe(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import gc

        from mlflow_eas_savedmodel import pyfunc as flavor_pyfunc

        gc.unfreeze()
        flavor_pyfunc._heap_frozen = False
        previous = os.environ.pop(flavor_pyfunc.SPARK_GC_FREEZE_ENV, None)
        if freeze_env is not None:
            os.environ[flavor_pyfunc.SPARK_GC_FREEZE_ENV] = freeze_env
        before = gc.get_freeze_count()
        mlflow.pyfunc.load_model(local_path)
        after = gc.get_freeze_count()
        os.environ.pop(flavor_pyfunc.SPARK_GC_FREEZE_ENV, None)
        if previous is not None:
            os.environ[flavor_pyfunc.SPARK_GC_FREEZE_ENV] = previous
        flavor_pyfunc._freeze_heap_in_spark_task()
        for batch in batches:
            yield pd.Series([[before, after]] * len(batch))

    rows = spark.range(0, 4, numPartitions=2).select(probe("id").alias("frozen")).toPandas()["frozen"]
    return np.stack(rows.to_numpy())


def test_a_load_in_a_spark_task_freezes_the_worker_heap(spark, mnist):
    """spark_udf makes one Python list per row of an array result; with the imports of
    TensorFlow and MLflow frozen, the cyclic collector no longer walks them for those lists
    (bench/: 1.5x a hand-written pandas_udf over 50-batch tasks without the freeze, 1.0x with)."""
    frozen = _worker_heap_after_a_load(spark, mnist, None)
    assert (frozen[:, 0] == 0).all() and (frozen[:, 1] > 100_000).all(), frozen


def test_the_worker_heap_freeze_turns_off_with_its_variable(spark, mnist):
    frozen = _worker_heap_after_a_load(spark, mnist, "0")
    assert (frozen == 0).all(), frozen


def test_a_load_outside_a_spark_task_leaves_the_collector_alone(spark, mnist):
    import gc

    from mlflow_eas_savedmodel import pyfunc as flavor_pyfunc

    before = gc.get_freeze_count()
    mlflow.pyfunc.load_model(mnist).predict(X)
    assert gc.get_freeze_count() == before and not flavor_pyfunc._heap_frozen
