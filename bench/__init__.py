"""Benchmarks: this flavor against ``mlflow.tensorflow`` and raw TensorFlow, in one run.

``python -m bench [--quick | --smoke]`` prints one table whose rows are ratios measured in the
same run against their baselines, and writes it with the machine and versions to
``bench/RESULTS.md``. Every measurement whose result depends on process state (cold start,
import cost, memory, log_model) runs in a fresh subprocess; see :mod:`bench.isolation`.

This package imports nothing heavy at module level: the import-cost and cold-start workers must
measure MLflow and TensorFlow, not the harness.
"""
