"""Cost of ``save_model(..., verify="runtimes")``: seconds per claimed runtime, cached environments.

    .venv/bin/python -m bench.verify_runtimes [--repeat N] [--output bench/RESULTS-verify-runtimes.md]

Saves the benchmark MLP (4-16-3, with an input example) ``N`` times with the default
``verify=True`` and ``N`` times with ``verify="runtimes"``, alternating, each into a new folder
of one process (imports and op registries warmed by a first save), and prints a table: the
median save time of each mode, their ratio, and per runtime the median seconds MLmodel's
``verification["runtimes"]`` recorded (the runtime process: interpreter start, TensorFlow
import, C++ and Python loaders, every SignatureDef). Environments must be built already
(``check-runtime --all`` once); building them is minutes and not what is measured.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import yaml


def _model():
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((4,), name="image")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(image)
    return keras.Model(image, keras.layers.Dense(3, name="scores")(hidden))


def measure(repeat=3):
    import mlflow_eas_savedmodel as mes
    from mlflow_eas_savedmodel.runtimes import RUNTIME_VERSIONS
    from mlflow_eas_savedmodel.runtimes.environments import ensure_runtime

    for version in RUNTIME_VERSIONS:
        ensure_runtime(version)  # cached: not measured
    model, example = _model(), np.ones((2, 4), np.float32)
    times = {True: [], "runtimes": []}
    per_runtime = {}
    with tempfile.TemporaryDirectory() as tmp:
        mes.save_model(model, os.path.join(tmp, "warm"), input_example=example)
        for i in range(repeat):
            for mode in (True, "runtimes"):
                path = os.path.join(tmp, f"{i}-{mode}")
                t0 = time.perf_counter()
                mes.save_model(model, path, input_example=example, verify=mode)
                times[mode].append(time.perf_counter() - t0)
                if mode == "runtimes":
                    with open(os.path.join(path, "MLmodel")) as fh:
                        record = yaml.safe_load(fh)["flavors"]["eas_savedmodel"]["verification"]["runtimes"]
                    for version, entry in record.items():
                        assert entry["check"].startswith("passed"), (version, entry)
                        per_runtime.setdefault(version, []).append(entry["seconds"])
    return times, per_runtime


def report(times, per_runtime, repeat):
    import tensorflow as tf

    plain, checked = statistics.median(times[True]), statistics.median(times["runtimes"])
    lines = [
        "# save_model(verify='runtimes'): cost per runtime",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}, TensorFlow {tf.__version__}; "
        f"benchmark MLP 4-16-3 with an input example; medians of {repeat} saves per mode, alternating, "
        "environments cached.",
        "",
        "| row | seconds | note |",
        "|---|---|---|",
        f"| save_model, verify=True | {plain:.2f} | static check + TF 2.21 run |",
        f"| save_model, verify='runtimes' | {checked:.2f} | ratio {checked / plain:.1f}x verify=True |",
    ]
    for version, seconds in per_runtime.items():
        lines.append(f"| TF {version} runtime | {statistics.median(seconds):.2f} | one runtime process: "
                     "start, import, C++ and Python loaders, every SignatureDef |")
    total = sum(statistics.median(s) for s in per_runtime.values())
    lines.append(f"| all {len(per_runtime)} runtimes | {total:.2f} | sum of the rows above |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.verify_runtimes", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    times, per_runtime = measure(args.repeat)
    text = report(times, per_runtime, args.repeat)
    sys.stdout.write(text)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
