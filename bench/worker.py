"""``python -m bench.worker TASK JSON_ARGS``: one measurement in this fresh process.

Tasks are imported lazily so that a worker loads only what its measurement needs.
"""

import importlib
import json
import sys

TASKS = {
    "prepare": "bench.models:prepare",
    "predict": "bench.predict:measure",
    "log_model": "bench.logging_cost:log_once",
    "export_growth": "bench.logging_cost:export_growth",
    "load_peak": "bench.logging_cost:load_peak",
    "export_folder": "bench.folder_export:export_folder",
    "folder_save_peak": "bench.folder_export:folder_save_peak",
    "spark_udf": "bench.spark_udf:measure",
}


def main(argv):
    task, args = argv[1], json.loads(argv[2])
    module_name, function_name = TASKS[task].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    from bench.isolation import emit

    emit(function(**args))


if __name__ == "__main__":
    main(sys.argv)
