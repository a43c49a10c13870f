"""Cold start and import cost, each run as ``python -c`` in a fresh process (no harness code).

Cold start is the parent's clock from spawning the process to the child's first prediction
returning (interpreter start-up, imports, load, first call). Import cost is measured inside the
child around one ``import`` statement.
"""

import numpy as np

from bench.isolation import RESULT_MARKER, run_snippet

_FINISH = f"import json, time; print({RESULT_MARKER!r} + json.dumps({{'done_at': time.time()}}))"

COLD_START = {
    "ours: mlflow.pyfunc": (
        "import numpy as np, mlflow.pyfunc\n"
        "m = mlflow.pyfunc.load_model({ours!r})\n"
        "m.predict(np.ones({shape}, np.float32))\n"
    ),
    "ours: load_model(uri).predict": (
        "import numpy as np, mlflow_eas_savedmodel\n"
        "m = mlflow_eas_savedmodel.load_model({ours!r})\n"
        "m.predict(np.ones({shape}, np.float32))\n"
    ),
    "raw: tf.saved_model.load + one call": (
        "import numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load({keras_export!r})\n"
        "m.signatures['serving_default'](tf.constant(np.ones({shape}, np.float32)))\n"
    ),
    "mlflow.tensorflow pyfunc": (
        "import numpy as np, mlflow.pyfunc\n"
        "m = mlflow.pyfunc.load_model({mlflow_tf!r})\n"
        "m.predict(np.ones({shape}, np.float32))\n"
    ),
}

IMPORTS = {"import mlflow_eas_savedmodel": "mlflow_eas_savedmodel", "import mlflow": "mlflow"}


def _import_snippet(module):
    return (
        "import sys, time, json\n"
        "start = time.perf_counter()\n"
        f"import {module}\n"
        "seconds = time.perf_counter() - start\n"
        f"print({RESULT_MARKER!r} + json.dumps({{'seconds': seconds, "
        "'tensorflow_imported': 'tensorflow' in sys.modules}))\n"
    )


def cold_start(paths, input_shape, repeats):
    """``{candidate: median seconds}``; candidates alternate, so load drift hits all alike."""
    shape = (1, *input_shape)
    times = {name: [] for name in COLD_START}
    for _ in range(repeats):
        for name, template in COLD_START.items():
            code = template.format(shape=shape, **paths) + _FINISH
            result = run_snippet(code)
            times[name].append(result["done_at"] - result["spawned_at"])
    return {name: float(np.median(t)) for name, t in times.items()}


def import_cost(repeats):
    """``{statement: median seconds}``; fails if importing our package imported TensorFlow."""
    times = {statement: [] for statement in IMPORTS}
    for _ in range(repeats):
        for statement, module in IMPORTS.items():
            result = run_snippet(_import_snippet(module))
            if module == "mlflow_eas_savedmodel" and result["tensorflow_imported"]:
                raise AssertionError("`import mlflow_eas_savedmodel` imported TensorFlow")
            times[statement].append(result["seconds"])
    return {statement: float(np.median(t)) for statement, t in times.items()}


