"""Batch scoring with ``mlflow.pyfunc.spark_udf`` on ``local[2]``, side by side in one Spark session.

Candidates, all scoring the same rows (``features``: an ``array<float>`` column of 16 values)
with an MLP 16-64-64-1 and writing to Spark's ``noop`` sink (every row computed, nothing
collected):

* ``ours``: ``spark_udf(spark, <our model>)``, result type inferred (``array<float>``);
* ``ours, no load cache``: the same with ``MLFLOW_EAS_SAVEDMODEL_LOAD_CACHE=0`` in the workers,
  i.e. a full load (hashes, ops policy, restore) for every task, as before the cache;
* ``hand-written``: an iterator ``pandas_udf`` that loads our artifact's ``savedmodel/`` once per
  Python worker (TF1 loader, one session callable) and runs each Arrow batch through it: the
  same graph with no MLflow in the way, the best a user could write;
* ``mlflow.tensorflow``: ``spark_udf`` of the same Keras model logged with MLflow's flavor.

Each candidate runs once untimed on a small frame first (Spark starts its Python workers, which
import TensorFlow: no flavor's cost), then timed in :data:`ROUNDS` rounds, the order reversed
every other round (interleaved, so other jobs' load on a shared machine falls on every candidate
alike), the median run counting; every run is kept in ``runs``. Rows are split into one partition (one task,
one ``spark_udf`` model load in local mode) per :data:`ROWS_PER_TASK` rows. Predictions of ours
and the hand-written UDF are compared bit for bit, mlflow.tensorflow's within float tolerance.

Needs pyspark and Java; ``measure`` returns ``{"skipped": reason}`` without them.
"""

import os
import shutil
import statistics
import sys
import time
from typing import Iterator

import numpy as np

FEATURES = 16
ROWS_PER_TASK = 20_000
ROUNDS = 3
_HANDWRITTEN_CACHE = {}


def build_mlp():
    import keras

    keras.utils.set_random_seed(0)
    features = keras.Input((FEATURES,), name="features")
    x = keras.layers.Dense(64, activation="relu")(features)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(features, keras.layers.Dense(1, name="score")(x), name="mlp_16_64_64_1")


def _handwritten_udf(saved_model_dir):
    """An iterator pandas_udf that loads the SavedModel once per Python worker process."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<float>")
    def score(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        # Imported by name, so the cache is this worker process's, not a copy pickled per task.
        from bench.spark_udf import _HANDWRITTEN_CACHE

        model = _HANDWRITTEN_CACHE.get(saved_model_dir)
        if model is None:
            import tensorflow as tf

            graph = tf.Graph()
            session = tf.compat.v1.Session(graph=graph)
            with graph.as_default():
                meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], saved_model_dir)
            signature = meta.signature_def["serving_default"]
            run = session.make_callable(
                signature.outputs["score"].name, feed_list=[signature.inputs["features"].name]
            )
            model = _HANDWRITTEN_CACHE[saved_model_dir] = run
        for batch in batches:
            yield pd.Series(list(model(np.stack(batch.to_numpy()).astype(np.float32))))

    return score


def _frame(spark, rows):
    from pyspark.sql import functions as F

    partitions = max(2, rows // ROWS_PER_TASK)
    columns = [F.rand(seed=i).cast("float") for i in range(FEATURES)]
    return spark.range(0, rows, numPartitions=partitions).select("id", F.array(*columns).alias("features"))


def _timed(frame, udf):
    started = time.perf_counter()
    frame.select(udf("features").alias("p")).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def _sample(frame, udf, rows=64):
    out = frame.orderBy("id").limit(rows).select(udf("features").alias("p")).toPandas()["p"]
    return np.stack(out.to_numpy()).astype(np.float32)


def measure(workdir, rows):
    """``{"rows": {n: {candidate: seconds}}, "tasks": {n: tasks}, "max_abs_diff": {...}}``."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return {"skipped": "pyspark is not installed (pip install 'mlflow-eas-savedmodel[spark]')"}
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return {"skipped": "no Java runtime (java on PATH or JAVA_HOME)"}
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    import_tensorflow()
    import mlflow
    import mlflow.tensorflow
    from pyspark.sql import SparkSession

    import mlflow_eas_savedmodel as mes

    model = build_mlp()
    example = np.random.default_rng(1).random((2, FEATURES), dtype=np.float32)
    ours_path = os.path.join(workdir, "spark-ours")
    peer_path = os.path.join(workdir, "spark-mlflow-tf")
    mes.save_model(model, ours_path, input_example=example)
    mlflow.tensorflow.save_model(model, peer_path, input_example=example,
                                 pip_requirements=mes.get_default_pip_requirements())
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master("local[2]").appName("bench-spark-udf")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bind", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        candidates = {
            "ours": mlflow.pyfunc.spark_udf(spark, ours_path),
            "ours, no load cache": mlflow.pyfunc.spark_udf(
                spark, ours_path, extra_env={"MLFLOW_EAS_SAVEDMODEL_LOAD_CACHE": "0"}
            ),
            "hand-written pandas_udf": _handwritten_udf(os.path.join(ours_path, "savedmodel")),
            "mlflow.tensorflow": mlflow.pyfunc.spark_udf(spark, peer_path, result_type="array<float>"),
        }
        # Saved files settle (integrity.SETTLED_SECONDS) before the cache keeps a model.
        time.sleep(2.5)
        small = _frame(spark, 4 * 1024)
        samples = {}
        for name, udf in candidates.items():
            _timed(small, udf)  # starts the Python workers (TensorFlow import)
            samples[name] = _sample(small, udf)
        reference = samples["hand-written pandas_udf"]
        result = {"rows": {}, "tasks": {}, "max_abs_diff": {
            name: float(np.max(np.abs(s - reference))) for name, s in samples.items()
        }, "bit_identical": {name: bool(np.array_equal(s, reference)) for name, s in samples.items()}}
        for n in rows:
            frame = _frame(spark, n)
            result["tasks"][str(n)] = frame.rdd.getNumPartitions()
            # ROUNDS rounds, the order reversed every other round; the median run of each counts
            # (the machine is shared: the runs' spread, kept in "runs", is the noise).
            seconds = {name: [] for name in candidates}
            for round_ in range(ROUNDS):
                for name in (list(candidates) if round_ % 2 == 0 else list(candidates)[::-1]):
                    seconds[name].append(_timed(frame, candidates[name]))
            result["rows"][str(n)] = {name: statistics.median(runs) for name, runs in seconds.items()}
            result.setdefault("runs", {})[str(n)] = seconds
        return result
    finally:
        spark.stop()
