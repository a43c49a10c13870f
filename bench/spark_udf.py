"""Batch scoring with ``mlflow.pyfunc.spark_udf`` on ``local[2]``, side by side in one Spark session.

Two models (issue 22 item 9), each scoring its own rows and writing to Spark's ``noop`` sink
(every row computed, nothing collected):

* ``mlp 16-64-64-1``: ``features``, an ``array<float>`` column of 16 values;
* ``ctr 1M x 32 embedding``: ``ids``, an ``array<bigint>`` column of 8 ids into one 1M x 32
  embedding table (128 MB of variables: what makes a load per task expensive), then
  Dense 64 and one sigmoid unit.

Candidates for each model:

* ``ours``: ``spark_udf(spark, <our model>)``, result type inferred (``array<float>``);
* ``ours, no load cache``: the same with ``MLFLOW_EAS_SAVEDMODEL_LOAD_CACHE=0`` in the workers,
  i.e. a full load (hashes, ops policy, restore) for every task, as before the cache;
* ``hand-written``: an iterator ``pandas_udf`` that loads our artifact's ``savedmodel/`` once per
  Python worker (TF1 loader, one session callable) and runs each Arrow batch through it: the
  same graph with no MLflow in the way, the best a user could write;
* ``mlflow.tensorflow``: ``spark_udf`` of the same Keras model logged with MLflow's flavor.

Each candidate runs once untimed on 8 small tasks first, after its sample predictions (Spark
starts its Python workers, which import TensorFlow: no flavor's cost), and the hand-written UDF once untimed on each timed frame
(Spark's first job on a frame); then every candidate is timed in :data:`ROUNDS` rounds, the order
reversed every other round (interleaved, so other jobs' load on a shared machine falls on every
candidate alike), the median run counting; every run is kept in ``runs``. Rows are split into one
partition (one task, one ``spark_udf`` model load in local mode) per :data:`ROWS_PER_TASK` rows.
Then the most rows run again as 2 tasks (one per core) for ours and the
hand-written UDF only: what is left there is the cost per Arrow batch. Predictions of every
candidate are compared with the hand-written UDF's, bit for bit.

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
CTR_FIELDS = 8
CTR_VOCABULARY = 1_000_000
CTR_DIM = 32
ROWS_PER_TASK = 20_000
ROUNDS = 3
MLP, CTR = "mlp 16-64-64-1", "ctr 1M x 32 embedding"
_HANDWRITTEN_CACHE = {}


def build_mlp():
    import keras

    keras.utils.set_random_seed(0)
    features = keras.Input((FEATURES,), name="features")
    x = keras.layers.Dense(64, activation="relu")(features)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(features, keras.layers.Dense(1, name="score")(x), name="mlp_16_64_64_1")


def build_ctr():
    import keras

    keras.utils.set_random_seed(0)
    ids = keras.Input((CTR_FIELDS,), dtype="int64", name="ids")
    x = keras.layers.Embedding(CTR_VOCABULARY, CTR_DIM, name="table")(ids)
    x = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(x))
    return keras.Model(ids, keras.layers.Dense(1, activation="sigmoid", name="ctr")(x), name="ctr")


def _column(model_label):
    """The model's input column: values from seeded ``rand``, the same for any partitioning."""
    from pyspark.sql import functions as F

    if model_label == MLP:
        return F.array(*[F.rand(seed=i).cast("float") for i in range(FEATURES)]).alias("features")
    return F.array(*[(F.rand(seed=i) * CTR_VOCABULARY).cast("long") for i in range(CTR_FIELDS)]).alias("ids")


# model label -> (builder, input column)
MODELS = {MLP: (build_mlp, "features"), CTR: (build_ctr, "ids")}


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
            (key, tensor), = signature.inputs.items()
            (output,) = signature.outputs.values()
            run = session.make_callable(output.name, feed_list=[tensor.name])
            dtype = tf.as_dtype(tensor.dtype).as_numpy_dtype
            model = _HANDWRITTEN_CACHE[saved_model_dir] = (run, dtype)
        run, dtype = model
        for batch in batches:
            yield pd.Series(list(run(np.stack(batch.to_numpy()).astype(dtype))))

    return score


def _per_task_costs_udf(model_path):
    """A pandas_udf whose every row is ``[ms]`` of the load steps its task ran, in task order.

    What ``spark_udf`` runs per task in local mode, split up: MLflow's requirements check
    (``mlflow.pyfunc.load_model`` runs it before any flavor code), MLflow's parse of the MLmodel
    file, then the rest of ``mlflow.pyfunc.load_model`` with the check off (the MLmodel again, and
    our loader: a hit of the load cache once the worker has loaded the model).
    """
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<double>")
    def costs(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import mlflow.pyfunc
        from mlflow.models import Model
        from mlflow.pyfunc import _get_pip_requirements_from_model_path
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

        t0 = time.perf_counter()
        warn_dependency_requirement_mismatches(_get_pip_requirements_from_model_path(model_path))
        t1 = time.perf_counter()
        Model.load(os.path.join(model_path, "MLmodel"))
        t2 = time.perf_counter()
        mlflow.pyfunc.load_model(model_path, suppress_warnings=True)
        t3 = time.perf_counter()
        ms = [1000 * (t1 - t0), 1000 * (t2 - t1), 1000 * (t3 - t2)]
        for batch in batches:
            yield pd.Series([ms] * len(batch))

    return costs


PER_TASK_STEPS = ("MLflow's requirements check", "MLflow's MLmodel parse",
                  "load_model without the check (MLmodel + our cached loader)")


def _per_task_costs(spark, label, model_path, tasks=20):
    """Median milliseconds of each of :data:`PER_TASK_STEPS` over ``tasks`` one-row tasks."""
    frame = _frame(spark, label, tasks, partitions=tasks)
    rows = frame.select(_per_task_costs_udf(model_path)("id").alias("ms")).toPandas()["ms"]
    ms = np.stack(rows.to_numpy())
    return {step: float(np.median(ms[:, i])) for i, step in enumerate(PER_TASK_STEPS)}


def _frame(spark, model_label, rows, partitions=None):
    partitions = partitions or max(2, rows // ROWS_PER_TASK)
    return spark.range(0, rows, numPartitions=partitions).select("id", _column(model_label))


def _timed(frame, udf, column):
    started = time.perf_counter()
    frame.select(udf(column).alias("p")).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def _sample(frame, udf, column, rows=64):
    out = frame.orderBy("id").limit(rows).select(udf(column).alias("p")).toPandas()["p"]
    return np.stack(out.to_numpy()).astype(np.float32)


def measure(workdir, rows, models=None):
    """``{"models": {label: {"rows": {n: {candidate: seconds}}, "tasks": ..., "bit_identical": ...}}}``."""
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

    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master("local[2]").appName("bench-spark-udf")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bind", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", "2g").config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        return {"models": {
            label: _measure_model(spark, workdir, label, rows, mes, mlflow)
            for label in (models or MODELS)
        }}
    finally:
        spark.stop()


def _measure_model(spark, workdir, label, rows, mes, mlflow):
    build, column = MODELS[label]
    model = build()
    # 8 small tasks: each of the 2 Python workers runs every candidate before the timing.
    small = _frame(spark, label, 4 * 1024, partitions=8)
    example = np.stack(small.limit(2).toPandas()[column].to_numpy())
    slug = label.split()[0]
    ours_path = os.path.join(workdir, f"{slug}-ours")
    peer_path = os.path.join(workdir, f"{slug}-mlflow-tf")
    mes.save_model(model, ours_path, input_example=example)
    mlflow.tensorflow.save_model(model, peer_path, input_example=example,
                                 pip_requirements=mes.get_default_pip_requirements())
    handwritten = "hand-written pandas_udf"
    candidates = {
        "ours": mlflow.pyfunc.spark_udf(spark, ours_path),
        "ours, no load cache": mlflow.pyfunc.spark_udf(
            spark, ours_path, extra_env={"MLFLOW_EAS_SAVEDMODEL_LOAD_CACHE": "0"}
        ),
        handwritten: _handwritten_udf(os.path.join(ours_path, "savedmodel")),
        "mlflow.tensorflow": mlflow.pyfunc.spark_udf(spark, peer_path, result_type="array<float>"),
    }
    # Saved files settle (integrity.SETTLED_SECONDS) before the cache keeps a model.
    time.sleep(2.5)
    samples = {}
    for name, udf in candidates.items():
        samples[name] = _sample(small, udf, column)
    for udf in candidates.values():
        _timed(small, udf, column)  # every Python worker imports TensorFlow and loads the model
    reference = samples[handwritten]
    result = {"rows": {}, "tasks": {}, "max_abs_diff": {
        name: float(np.max(np.abs(s - reference))) for name, s in samples.items()
    }, "bit_identical": {name: bool(np.array_equal(s, reference)) for name, s in samples.items()}}
    for n in rows:
        frame = _frame(spark, label, n)
        result["tasks"][str(n)] = frame.rdd.getNumPartitions()
        _timed(frame, candidates[handwritten], column)  # Spark's first job on this frame
        # The median run of each counts (the machine is shared: the spread, kept in "runs", is noise).
        seconds = {name: [] for name in candidates}
        _rounds(frame, candidates, column, seconds)
        result["rows"][str(n)] = {name: statistics.median(runs) for name, runs in seconds.items()}
        result.setdefault("runs", {})[str(n)] = seconds
    result["per_task_ms"] = _per_task_costs(spark, label, ours_path)
    # The most rows again in one task per core (local[2]: 2 tasks, what Spark's default
    # parallelism gives spark.range): per-task costs vanish, what is left is the per-batch cost.
    n = max(rows)
    frame = _frame(spark, label, n, partitions=2)
    _timed(frame, candidates[handwritten], column)  # Spark's first job on this frame
    few = {name: candidates[name] for name in ("ours", handwritten)}
    seconds = {name: [] for name in few}
    _rounds(frame, few, column, seconds)
    result["two_tasks"] = {"rows": n, "seconds": {k: statistics.median(v) for k, v in seconds.items()},
                           "runs": seconds}
    return result


def _rounds(frame, candidates, column, seconds):
    """:data:`ROUNDS` timed runs of each candidate, the order reversed every other round."""
    for round_ in range(ROUNDS):
        for name in (list(candidates) if round_ % 2 == 0 else list(candidates)[::-1]):
            seconds[name].append(_timed(frame, candidates[name], column))
