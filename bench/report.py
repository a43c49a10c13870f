"""The result table: rows of (ours, baseline, ratio, target), printed and written as Markdown."""

import dataclasses
import datetime
import importlib.metadata
import os
import platform
import re

# What limits a row when its target is missed (from profiling; see bench/README.md).
LIMITS = {
    "predict": (
        "pyfunc predict is our handle (the `handle` rows) plus MLflow's own "
        "`PyFuncModel.predict`: prediction context, `_validate_prediction_input` (tensor-schema "
        "and params enforcement) and `inspect.signature` of the wrapper, about 25-35 us per call "
        "here, which no flavor can skip without turning schema enforcement off. Where the raw "
        "call itself takes 40-60 us (the MLP at any batch size), that constant alone is 50% or "
        "more; where it takes milliseconds (the CNN at batch 1024) pyfunc and handle are within "
        "the run-to-run noise of this shared machine (compare the handle row, which has no MLflow "
        "in it, against the same baseline)."
    ),
    "serving": (
        "At 1 client ours serves as fast as the identity model; at 4 it trails it. py-spy on the "
        "server under 4 clients puts about 14% of all samples in TensorFlow's session call, "
        "which takes ~15 us in isolation: TensorFlow's Python binding always releases the GIL "
        "around a run, and in MLflow's one-process server (event loop plus request threads) "
        "getting it back means waiting behind the other threads. The identity model never "
        "releases the GIL. More server workers (`mlflow models serve -w N`) spread the requests "
        "over processes. The load generator, the server and other jobs also share 2 cores, so "
        "req/s varies between repeats (medians shown)."
    ),
    "cold start": (
        "`mlflow.pyfunc.load_model` needs `import mlflow` (about 1-2 s here) on top of "
        "TensorFlow's import, which the raw baseline does not pay."
    ),
    "log_model": (
        "The first log_model of a process also traces the model and loads the six EAS op "
        "registries for the static runtime check."
    ),
    "memory": (
        "The export reads each weight from the model a piece at a time (64 MiB) into "
        "`variables/`, so its own need is about one piece; `load_model` holds the weights once "
        "in the session plus TensorFlow's restore buffers."
    ),
    "export time": (
        "Below ~64 MiB the export's fixed cost (tracing, freezing, the static op check of six "
        "runtimes) dominates; above, the write is bound by the disk, like np.save."
    ),
}


@dataclasses.dataclass
class Row:
    """One line of the table: ``ratio`` is ``ours / baseline`` in the row's own unit."""

    measurement: str
    ours_label: str
    ours: float
    baseline_label: str
    baseline: float
    unit: str  # "s", "bytes" or "req/s"
    target: str = ""  # e.g. "<= 1.10"; empty: information only
    extra_check: bool = True  # a condition beside the ratio that the target also needs
    group: str = ""

    @property
    def ratio(self):
        return self.ours / self.baseline if self.baseline else float("inf")

    @property
    def result(self):
        if not self.target:
            return ""
        op, bound = self.target.split()
        ok = self.ratio <= float(bound) if op == "<=" else self.ratio >= float(bound)
        return "PASS" if ok and self.extra_check else "MISS"


def format_value(value, unit):
    if unit == "s":
        for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "us")):
            if value >= scale or suffix == "us":
                return f"{value / scale:.3g} {suffix}"
    if unit == "bytes":
        for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value:.0f} B"
    return f"{value:.4g} {unit}"


def environment():
    """Date, machine and versions, read without importing TensorFlow or MLflow."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            found = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass

    def version(*names):
        for name in names:
            try:
                return f"{name} {importlib.metadata.version(name)}"
            except importlib.metadata.PackageNotFoundError:
                continue
        return "not installed"

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.machine()}",
        "load average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "versions": ", ".join(
            [f"Python {platform.python_version()}", version("tensorflow-cpu", "tensorflow"),
             version("keras"), version("mlflow"), version("mlflow-eas-savedmodel")]
        ),
    }


def table(rows):
    lines = [
        "| measurement | ours (median) | baseline (median) | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.measurement} | {format_value(row.ours, row.unit)} ({row.ours_label}) "
            f"| {format_value(row.baseline, row.unit)} ({row.baseline_label}) "
            f"| {row.ratio:.4g} | {row.target} | {row.result} |"
        )
    return "\n".join(lines)


def render(rows, details, env, mode, command, seconds):
    """The whole Markdown report."""
    missed = sorted({row.group for row in rows if row.result == "MISS" and row.group in LIMITS})
    parts = [
        "# Benchmark results",
        "",
        f"Command: `{command}` (mode: {mode}, {seconds:.0f} s)  ",
        f"Date: {env['date']}  ",
        f"Machine: {env['machine']} (load average at the end: {env['load average']})  ",
        f"Versions: {env['versions']}",
        "",
        "Ratio = ours / baseline (for req/s, higher is better; for everything else, lower). "
        "Every pair was measured in this same run; medians over interleaved repetitions.",
        "",
        table(rows),
    ]
    if missed:
        parts += ["", "## What limits the missed targets", ""]
        parts += [f"- **{group}**: {LIMITS[group]}" for group in missed]
    for title, body in details:
        parts += ["", f"## {title}", "", body]
    return "\n".join(parts) + "\n"


def parse_table(markdown):
    """``[(measurement, ratio, result)]`` read back from :func:`render`'s table."""
    rows, in_table = [], False
    for line in markdown.splitlines():
        if line.startswith("| measurement |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if in_table and cells[0] != "---":
            rows.append((cells[0], float(cells[3]), cells[5]))
    return rows
