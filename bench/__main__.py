"""``python -m bench [--quick | --smoke] [--output PATH]``: run every benchmark, print the table.

Modes: full (default; writes ``bench/RESULTS.md``), ``--quick`` (fewer repetitions, no 1 GB
model), ``--smoke`` (one model, a few iterations, no serving, cold start or big models; for
CI, writes only where ``--output`` says) and ``--export`` (only the export rows, written to
``bench/RESULTS-export.md``). ``--large`` adds a 3 GiB model to the export rows.
``--spark-rows 200000,1000000`` sets the row counts of the ``spark_udf`` rows (default 20000 in
full and quick mode; ``0`` leaves them out); they need pyspark and Java and are skipped without.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

from bench import report
from bench.isolation import run_worker

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
EXPORT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS-export.md")
MB = 1 << 20
MODES = {
    "smoke": dict(kinds=["mlp"], batch_sizes=[1, 32], rounds=3, serving=None, cold_repeats=0,
                  import_repeats=1, log_repeats=0, growth=[], spark_rows=[]),
    "quick": dict(kinds=["mlp", "cnn"], batch_sizes=[1, 32, 1024], rounds=15,
                  serving=(300, 40, 3), cold_repeats=3, import_repeats=3, log_repeats=1,
                  growth=[1 * MB, 100 * MB], spark_rows=[20_000]),
    "full": dict(kinds=["mlp", "cnn"], batch_sizes=[1, 32, 1024], rounds=30,
                 serving=(600, 60, 5), cold_repeats=5, import_repeats=5, log_repeats=3,
                 growth=[1 * MB, 100 * MB, 1024 * MB], spark_rows=[20_000]),
    "export": dict(kinds=[], batch_sizes=[], rounds=0, serving=None, cold_repeats=0,
                   import_repeats=0, log_repeats=0, growth=[1 * MB, 100 * MB, 1024 * MB],
                   spark_rows=[]),
    "folders": dict(kinds=[], batch_sizes=[], rounds=0, serving=None, cold_repeats=0,
                    import_repeats=0, log_repeats=0, growth=[], spark_rows=[]),
}
# spark_udf against the hand-written iterator pandas_udf, at the sizes of issue 22 item 9.
SPARK_TARGET_ROWS = 200_000
# --large: the export rows also for a model above protobuf's 2 GiB (needs ~10 GiB free).
LARGE_GROWTH = 3 * 1024 * MB
# --folders: save_model of Keras model.export() folders (TF2 SavedModels) of these sizes, with
# verify='static' (what a folder above the 1 GiB verification limit gets by default); --large
# adds the 2.3 GiB folder of issue 21 (needs ~8 GiB free).
FOLDERS_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS-folders.md")
FOLDER_SIZES = [100 * MB, 512 * MB]
LARGE_FOLDER = 2355 * MB
PREDICT_TARGETS = {1: "<= 1.10", 1024: "<= 1.05"}


def _progress(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _predict_rows(paths, kind, settings, details):
    from bench import predict

    _progress(f"predict latency: {kind}")
    results = run_worker(
        "predict",
        {"paths": paths[kind], "kind": kind, "batch_sizes": settings["batch_sizes"],
         "rounds": settings["rounds"]},
    )
    rows = []
    lines = ["| batch | " + " | ".join(next(iter(results.values()))) + " |"]
    lines.append("|---" * (len(lines[0].split("|")) - 2) + "|")
    for batch, medians in results.items():
        lines.append(f"| {batch} | " + " | ".join(report.format_value(v, "s") for v in medians.values()) + " |")
        raw = {name: v for name, v in medians.items() if name.startswith(predict.RAW_PREFIX)}
        fastest = min(raw, key=raw.get)
        measurement = f"predict {kind} batch {batch}"
        target = PREDICT_TARGETS.get(int(batch), "")
        rows += [
            report.Row(measurement, "pyfunc", medians[predict.OURS_PYFUNC], fastest, raw[fastest],
                       "s", target, group="predict"),
            report.Row(measurement, "pyfunc", medians[predict.OURS_PYFUNC],
                       predict.PEER_PYFUNC, medians[predict.PEER_PYFUNC], "s"),
            report.Row(measurement, "handle", medians[predict.OURS_HANDLE], fastest, raw[fastest], "s"),
        ]
    details.append((f"Predict latency, {kind}: every candidate (median per call)", "\n".join(lines)))
    return rows


def _serving_rows(workdir, paths, requests, details):
    from bench import serving

    _progress("serving: ours, mlflow.tensorflow, identity")
    ours, peer, identity = "ours", "mlflow.tensorflow", "identity PythonModel"
    results = serving.measure(
        workdir,
        {ours: (paths["mlp"]["ours"], False), peer: (paths["mlp"]["mlflow_tf"], True),
         identity: (paths["identity"], False)},
        "mlp", *requests,
    )
    rows = []
    lines = ["| server | clients | requests (all repeats) | req/s | p50 | p99 |", "|---|---|---|---|---|---|"]
    for name, by_clients in results.items():
        for clients, r in by_clients.items():
            lines.append(
                f"| {name} | {clients} | {r['requests']} | {r['requests_per_second']:.0f} | "
                f"{report.format_value(r['p50_seconds'], 's')} | {report.format_value(r['p99_seconds'], 's')} |"
            )
    for clients in serving.CLIENTS:
        c = str(clients)
        for baseline in (identity, peer):
            rows.append(report.Row(
                f"serving mlp, {clients} client{'s' if clients > 1 else ''}, req/s", ours,
                results[ours][c]["requests_per_second"], baseline,
                results[baseline][c]["requests_per_second"], "req/s",
                ">= 0.85" if clients == 4 and baseline == identity else "", group="serving",
            ))
        rows.append(report.Row(
            f"serving mlp, {clients} client{'s' if clients > 1 else ''}, p99", ours,
            results[ours][c]["p99_seconds"], identity, results[identity][c]["p99_seconds"], "s",
        ))
    details.append(("Serving (`mlflow models serve --env-manager local`, 1 worker, MLP, batch 1; medians over alternating repeats)", "\n".join(lines)))
    return rows


def _log_model_rows(workdir, repeats, details):
    import numpy as np

    rows, lines = [], ["| flavor | input_example | seconds (each run) | artifact | requirements |", "|---|---|---|---|---|"]
    for with_example in (False, True):
        runs = {"ours": [], "ours_unverified": [], "mlflow_tf": []}
        for i in range(repeats):
            for flavor in runs:
                _progress(f"log_model: {flavor}, input_example={with_example}, run {i + 1}")
                store = os.path.join(workdir, f"log-{flavor}-{with_example}-{i}")
                runs[flavor].append(run_worker(
                    "log_model", {"workdir": store, "flavor": flavor, "kind": "mlp", "with_example": with_example}
                ))
        median = {f: float(np.median([r["seconds"] for r in rs])) for f, rs in runs.items()}
        size = {f: rs[0]["artifact_bytes"] for f, rs in runs.items()}
        for flavor, rs in runs.items():
            each = ", ".join(f"{r['seconds']:.2f}" for r in rs)
            lines.append(
                f"| {flavor} | {with_example} | {each} | "
                f"{report.format_value(size[flavor], 'bytes')} | {' '.join(rs[0]['requirements'])} |"
            )
        suffix = " with input_example" if with_example else " (defaults)"
        pinned = all(r["pinned"] for r in runs["ours"])
        rows += [
            report.Row("log_model mlp" + suffix, "ours" + ("" if pinned else ", NOT pinned"),
                       median["ours"], "mlflow.tensorflow", median["mlflow_tf"], "s",
                       "" if with_example else "<= 0.25", extra_check=pinned, group="log_model"),
            report.Row("artifact size mlp" + suffix, "ours", size["ours"], "mlflow.tensorflow",
                       size["mlflow_tf"], "bytes"),
            # What the post-save check (load + run every SignatureDef, verify.py) adds.
            report.Row("log_model mlp" + suffix + ": post-save verification", "ours (verify=True)",
                       median["ours"], "ours (verify=False)", median["ours_unverified"], "s"),
        ]
    details.append(("log_model (fresh sqlite store per run, first log_model of the process)", "\n".join(lines)))
    return rows


def _cold_start_rows(paths, repeats, details):
    from bench import startup
    from bench.models import INPUT_SHAPES

    _progress("cold start")
    medians = startup.cold_start(paths["mlp"], INPUT_SHAPES["mlp"], repeats)
    raw = "raw: tf.saved_model.load + one call"
    rows = [
        report.Row("cold start mlp (process start to first prediction)", name.removeprefix("ours: "),
                   medians[name], baseline, medians[baseline], "s",
                   "<= 1.20" if name == "ours: mlflow.pyfunc" and baseline == raw else "",
                   group="cold start")
        for name in ("ours: mlflow.pyfunc", "ours: load_model(uri).predict")
        for baseline in (raw, "mlflow.tensorflow pyfunc")
    ]
    details.append(("Cold start (median seconds)", "\n".join(
        ["| candidate | seconds |", "|---|---|"] + [f"| {n} | {v:.2f} |" for n, v in medians.items()]
    )))
    return rows


def _spark_rows(workdir, rows, details):
    from bench.spark_udf import ROWS_PER_TASK

    _progress(f"spark_udf on local[2]: {rows} rows")
    folder = os.path.join(workdir, "spark")
    os.makedirs(folder)
    r = run_worker("spark_udf", {"workdir": folder, "rows": rows}, timeout=3600)
    if "skipped" in r:
        details.append(("spark_udf (local[2])", f"skipped: {r['skipped']}"))
        return []
    ours, handwritten = "ours", "hand-written pandas_udf"
    rows_out = []
    for model, m in r["models"].items():
        candidates = list(next(iter(m["rows"].values())))
        lines = ["| rows | tasks | " + " | ".join(candidates) + " |", "|---" * (len(candidates) + 2) + "|"]
        for n, seconds in m["rows"].items():
            lines.append(f"| {int(n):,} | {m['tasks'][n]} | "
                         + " | ".join(f"{v:.2f} s" for v in seconds.values()) + " |")
            label = f"spark_udf {model}, {int(n):,} rows ({m['tasks'][n]} tasks)"
            rows_out += [
                report.Row(label, ours, seconds[ours], handwritten, seconds[handwritten], "s",
                           "<= 1.10" if int(n) >= SPARK_TARGET_ROWS else "",
                           extra_check=m["bit_identical"][ours], group="spark_udf"),
                report.Row(label, ours, seconds[ours], "mlflow.tensorflow", seconds["mlflow.tensorflow"], "s"),
                report.Row(label, ours, seconds[ours], "ours, no load cache", seconds["ours, no load cache"], "s"),
            ]
        few = m["two_tasks"]
        label = f"spark_udf {model}, {few['rows']:,} rows (2 tasks, one per core)"
        rows_out.append(report.Row(label, ours, few["seconds"][ours], handwritten,
                                   few["seconds"][handwritten], "s"))
        lines.append(f"| {few['rows']:,} | 2 | {few['seconds'][ours]:.2f} s | | "
                     f"{few['seconds'][handwritten]:.2f} s | |")
        runs_two = ", ".join(f"{k} " + "/".join(f"{v:.1f}" for v in vs) for k, vs in few["runs"].items())
        per_task = "; ".join(f"{step} {ms:.1f} ms" for step, ms in m["per_task_ms"].items())
        diffs = ", ".join(f"{k}: {v:.3g}{' (bit-identical)' if m['bit_identical'][k] else ''}"
                          for k, v in m["max_abs_diff"].items())
        runs = "; ".join(f"{int(n):,} rows: " + ", ".join(
            f"{k} " + "/".join(f"{v:.1f}" for v in vs) for k, vs in per.items()
        ) for n, per in m["runs"].items())
        details.append((
            f"spark_udf {model} on local[2] (noop sink, one task per {ROWS_PER_TASK} rows; Python "
            "workers started untimed first; median of the runs); max abs diff to the hand-written "
            f"UDF: {diffs}; every run (s): {runs}; {few['rows']:,} rows in 2 tasks: {runs_two}; "
            f"per task in a Python worker (median of 20 one-row tasks): {per_task}",
            "\n".join(lines),
        ))
    return rows_out


def _import_rows(repeats):
    from bench import startup

    _progress("import cost")
    medians = startup.import_cost(repeats)
    return [report.Row("import cost (TensorFlow not imported: checked)", "import mlflow_eas_savedmodel",
                       medians["import mlflow_eas_savedmodel"], "import mlflow",
                       medians["import mlflow"], "s")]


def _growth_rows(workdir, sizes, details):
    rows, lines = [], [
        "| weights | save_model | np.save | artifact | saved_model.pb | RSS after build | peak RSS | extra | load_model extra |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    b = lambda v: report.format_value(v, "bytes")  # noqa: E731
    for size in sizes:
        _progress(f"export growth: {b(size)} of weights")
        folder = os.path.join(workdir, f"growth-{size}")
        os.makedirs(folder)
        r = run_worker("export_growth", {"workdir": folder, "weight_bytes": size}, timeout=1800)
        _progress(f"load_model peak: {b(size)} of weights")
        load = run_worker("load_peak", {"model_path": r["model_path"], "weight_bytes": size}, timeout=1800)
        shutil.rmtree(folder, ignore_errors=True)
        label = f"export {b(r['weights_bytes'])} MLP"
        lines.append(
            f"| {b(r['weights_bytes'])} | {r['seconds']:.2f} s | {r['numpy_save_seconds']:.2f} s | {b(r['artifact_bytes'])} | "
            f"{b(r['saved_model_pb_bytes'])} | {b(r['rss_after_build_bytes'])} | {b(r['peak_rss_bytes'])} | "
            f"{b(r['extra_memory_bytes'])} | {b(load['extra_memory_bytes'])} |"
        )
        # Below ~64 MiB the export's fixed cost (tracing, op registries) dominates the ratios.
        big = r["weights_bytes"] >= 64 * MB
        rows += [
            report.Row(label + ": save_model extra memory", "peak RSS - RSS after build",
                       r["extra_memory_bytes"], "weights", r["weights_bytes"], "bytes",
                       "<= 0.5" if big else "", group="memory"),
            report.Row(label + ": save_model time", "ours", r["seconds"], "np.save of the weights",
                       r["numpy_save_seconds"], "s", "<= 3.0" if big else "", group="export time"),
            report.Row(label + ": saved_model.pb", "saved_model.pb", r["saved_model_pb_bytes"],
                       "weights", r["weights_bytes"], "bytes", "",
                       extra_check=r["saved_model_pb_bytes"] <= MB),
            report.Row(label + ": load_model extra memory", "peak RSS - RSS before load",
                       load["extra_memory_bytes"], "weights", r["weights_bytes"], "bytes",
                       "<= 1.3" if r["weights_bytes"] >= 2 * 1024 * MB else "", group="memory"),
        ]
    details.append(("Export cost as models grow (ours, one fresh process each for save and load)", "\n".join(lines)))
    return rows


def _folder_rows(workdir, sizes, details):
    rows, lines = [], [
        "| weights | variables/ | save_model | peak RSS | RSS before | extra | artifact | streamed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    b = lambda v: report.format_value(v, "bytes")  # noqa: E731
    for size in sizes:
        folder_dir = os.path.join(workdir, f"folder-{size}")
        os.makedirs(folder_dir)
        _progress(f"TF2 folder: exporting {b(size)} of weights")
        built = run_worker("export_folder", {"workdir": folder_dir, "weight_bytes": size}, timeout=1800)
        _progress(f"TF2 folder: save_model of {b(built['weights_bytes'])} of weights")
        r = run_worker("folder_save_peak", {"folder": built["folder"], "workdir": folder_dir, "verify": "static"},
                       timeout=1800)
        shutil.rmtree(folder_dir, ignore_errors=True)
        weights = built["weights_bytes"]
        lines.append(
            f"| {b(weights)} | {b(built['variables_bytes'])} | {r['seconds']:.2f} s | {b(r['peak_rss_bytes'])} | {b(r['rss_before_bytes'])} | "
            f"{b(r['extra_memory_bytes'])} | {b(r['artifact_bytes'])} | {r['streamed']} |"
        )
        rows.append(report.Row(
            f"model.export() folder {b(weights)}: save_model extra memory", "peak RSS - RSS before",
            r["extra_memory_bytes"], "weights", weights, "bytes",
            "<= 0.5" if weights >= 64 * MB else "", group="memory", extra_check=r["streamed"],
        ))
    details.append(("TF2 SavedModel folders (Keras model.export()) as sources, verify='static'", "\n".join(lines)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick")
    mode.add_argument("--smoke", action="store_const", dest="mode", const="smoke")
    mode.add_argument("--export", action="store_const", dest="mode", const="export",
                      help="only the export rows (1 MiB, 100 MiB, 1 GiB); writes bench/RESULTS-export.md")
    mode.add_argument("--folders", action="store_const", dest="mode", const="folders",
                      help="only the TF2 folder rows (100 MiB, 512 MiB); writes bench/RESULTS-folders.md")
    parser.add_argument("--large", action="store_true", help="add a 3 GiB model to the export rows")
    parser.add_argument("--spark-rows", help="comma-separated row counts of the spark_udf rows, e.g. 200000,1000000 (0: none)")
    parser.add_argument("--output", help="the Markdown file (default: bench/RESULTS.md; none in --smoke)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (models, server logs)")
    args = parser.parse_args(argv)
    mode = args.mode or "full"
    settings = MODES[mode]
    if args.large and mode != "folders":
        settings = dict(settings, growth=settings["growth"] + [LARGE_GROWTH])
    if args.spark_rows is not None:
        settings = dict(settings, spark_rows=[int(n) for n in args.spark_rows.split(",") if int(n) > 0])
    default_output = {"export": EXPORT_OUTPUT, "folders": FOLDERS_OUTPUT}.get(mode, DEFAULT_OUTPUT)
    output = args.output or (None if mode == "smoke" else default_output)
    command = "python -m bench" + (f" --{mode}" if mode != "full" else "") + (" --large" if args.large else "")
    command += f" --spark-rows {args.spark_rows}" if args.spark_rows is not None else ""

    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="mlflow-eas-bench-")
    rows, details = [], []
    try:
        if settings["kinds"]:
            _progress(f"preparing models in {workdir}")
            paths = run_worker("prepare", {"workdir": workdir, "kinds": settings["kinds"]})
        for kind in settings["kinds"]:
            rows += _predict_rows(paths, kind, settings, details)
        if settings["serving"]:
            rows += _serving_rows(workdir, paths, settings["serving"], details)
        if settings["log_repeats"]:
            rows += _log_model_rows(workdir, settings["log_repeats"], details)
        if settings["cold_repeats"]:
            rows += _cold_start_rows(paths, settings["cold_repeats"], details)
        if settings["import_repeats"]:
            rows += _import_rows(settings["import_repeats"])
        if settings["growth"]:
            rows += _growth_rows(workdir, settings["growth"], details)
        if mode == "folders":
            rows += _folder_rows(workdir, FOLDER_SIZES + ([LARGE_FOLDER] if args.large else []), details)
        if settings["spark_rows"]:
            rows += _spark_rows(workdir, settings["spark_rows"], details)
    finally:
        if args.keep:
            _progress(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    markdown = report.render(rows, details, report.environment(), mode, command, time.perf_counter() - started)
    print(markdown)
    if output:
        with open(output, "w") as f:
            f.write(markdown)
        _progress(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
