"""The differential table: every stateful construct, rewrite and rule, run in the real runtimes.

Each row of ``tests/support/differential_rows.py`` is converted once by ``save_model`` in TF 2.21
(``converted`` rows) or written as a plain SavedModel (``rule`` rows); then, per runtime, ALL
rows run in ONE runtime process (:func:`run_many_in_runtime`), and each row must be:

* claimed (in ``eas_processors``): loaded by the C API and the Python loader, every SignatureDef
  answered, and the answers equal to TF 2.21's (floats within 1e-5);
* or not claimed, with the reason named in ``eas_incompatibilities``;
* for a ``rule`` row: refused (at load or run) where the rule leaves the runtime out, answered
  like TF 2.21 elsewhere.

So the next difference between TF 2.21 and an old runtime shows up as a failing row. By default
TF 1.12, 1.15 and 2.3 run the table; ``MLFLOW_EAS_SAVEDMODEL_ALL_RUNTIMES=1`` runs all six and
adds TF 1.12's own Estimator exports (TF 1.15's are default rows).
``pytest -s`` prints the table.
"""

import os
import time

import numpy as np
import pytest
from conftest import runtime_versions

import mlflow_eas_savedmodel as mes
from support.differential_rows import ROWS
from support.mlmodel import read_flavor
from mlflow_eas_savedmodel.runtimes import processor_version
from mlflow_eas_savedmodel.runtimes.runtime_process import run_many_in_runtime
from mlflow_eas_savedmodel.runtimes.semantic import RULES

VERSIONS = runtime_versions(ci_default=("1.12", "1.15", "2.3"))


class Converted:
    def __init__(self, row, saved_model_dir, feeds, expected, claimed=None, incompatibilities=None, rule=None):
        self.row, self.saved_model_dir, self.feeds, self.expected = row, saved_model_dir, feeds, expected
        self.claimed, self.incompatibilities, self.rule = claimed, incompatibilities or {}, rule


def _convert(tf, row, folder):
    os.makedirs(folder)
    if row.kind == "rule":
        path, feeds, expected, rule = row.build(tf, folder)
        return Converted(row, path, feeds, expected, rule=rule)
    source, kwargs, feeds, expected = row.build(tf, folder)
    path = os.path.join(folder, "model")
    try:
        mes.save_model(source, path, **kwargs)
    finally:
        if hasattr(source, "close"):
            source.close()
    conf = read_flavor(path)
    claimed = {processor_version(p) for p in conf["eas_processors"]}
    return Converted(
        row, os.path.join(path, "savedmodel"), feeds, expected, claimed, conf["eas_incompatibilities"]
    )


@pytest.fixture(scope="module")
def table(tf, tmp_path_factory):
    root = tmp_path_factory.mktemp("differential")
    t0 = time.monotonic()
    converted = {row.name: _convert(tf, row, str(root / str(i))) for i, row in enumerate(ROWS)}
    print(f"\ndifferential table: {len(ROWS)} rows converted in {time.monotonic() - t0:.1f} s")
    return converted


def _differences(actual, expected):
    """What differs between a runtime's outputs and TF 2.21's, as text ('' when none)."""
    problems = []
    for sig, outs in expected.items():
        got_sig = actual.get(sig, {})
        for key, want in outs.items():
            want = np.asarray(want)
            if key not in got_sig:
                problems.append(f"{sig}/{key} missing")
                continue
            got = np.asarray(got_sig[key])
            if want.dtype == object or want.dtype.kind in "SU":
                same = got.shape == want.shape and [bytes(v) if not isinstance(v, str) else v.encode() for v in want.reshape(-1).tolist()] == [bytes(v) for v in got.reshape(-1).tolist()]
            else:
                same = got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-5)
            if not same:
                problems.append(f"{sig}/{key}: {got.tolist()!r:.200} != {want.tolist()!r:.200}")
    return "; ".join(problems)


def _first_error(run):
    errors = [run.c_api_error, run.python_error, *run.c_api_run_errors.values(), *run.python_run_errors.values()]
    return next((e.strip().splitlines()[0][:300] for e in errors if e), "")


def _verdict(entry, run, version):
    """``(passed, text)`` of one row in one runtime."""
    answered = run.ok and not _differences(run.c_api_outputs, entry.expected) and not _differences(
        run.outputs, entry.expected
    )
    if entry.rule is not None:
        (rule,) = [r for r in RULES if r.name == entry.rule]
        if version in rule.runtimes:
            return not answered, "left out by the rule; runtime: " + (
                "answered (the rule is wrong here)" if answered else _first_error(run) or _differences(run.c_api_outputs, entry.expected)
            )
        return answered, "answers" if answered else "should answer: " + (
            _first_error(run) or _differences(run.c_api_outputs, entry.expected))
    if version in entry.claimed:
        if answered:
            return True, "claimed, answers like TF 2.21"
        return False, "CLAIMED but " + (
            _first_error(run) or _differences(run.c_api_outputs, entry.expected)
            or _differences(run.outputs, entry.expected)
        )
    reasons = entry.incompatibilities.get(version) or []
    runtime = "answers anyway" if answered else "refuses: " + _first_error(run)
    return bool(reasons), f"not claimed ({'; '.join(reasons)[:200] or 'NO REASON NAMED'}); runtime {runtime}"


@pytest.mark.runtime
@pytest.mark.parametrize("version", VERSIONS)
def test_every_row_holds_in_the_real_runtime(table, version):
    t0 = time.monotonic()
    runs = run_many_in_runtime(
        {name: (e.saved_model_dir, e.feeds) for name, e in table.items()}, version, timeout=600
    )
    seconds = time.monotonic() - t0
    verdicts = {name: _verdict(table[name], run, version) for name, run in runs.items()}
    print(f"\nTF {version}: {len(runs)} rows in one runtime process, {seconds:.1f} s")
    print("| row | TF %s |\n|---|---|" % version)
    for name, (passed, text) in verdicts.items():
        print(f"| {name} | {'ok' if passed else 'FAIL'}: {text} |")
    failed = {name: text for name, (passed, text) in verdicts.items() if not passed}
    assert not failed, failed


def test_the_table_has_a_row_for_every_rewrite_and_rule():
    """A new rewrite or rule without a row fails here: the ops come from ``op_versions.REWRITES``."""
    from mlflow_eas_savedmodel.graph.rewrite.op_versions import REWRITES

    # The int64 segment-id ops share one row ("segment ids" below), as they share one rewrite.
    rewritten = {op for op in REWRITES if not op.startswith("SparseSegment")}
    assert {"SelectV2", "FusedBatchNormV3", "ParseExampleV2"} <= rewritten
    names = " ".join(row.name for row in ROWS)
    for op in rewritten:
        assert op in names, f"no differential row for the {op} rewrite"
    for kind in ("segment ids", "XLA must-compile", "grouped Conv2D", "channels-first"):
        assert kind in names, kind
    assert {r.name for r in RULES} == {row.name.split()[1] for row in ROWS if row.kind == "rule"}
