"""The one table of EAS runtimes (``runtimes/table.py``): what is derived from it, and a dry run of
adding a runtime (a fake TF 2.8 row) that builds nothing."""

import dataclasses

import pytest
from click.testing import CliRunner

from mlflow_eas_savedmodel import errors, runtimes
from mlflow_eas_savedmodel.cli import cli
from mlflow_eas_savedmodel.runtimes import environments, semantic, table
from mlflow_eas_savedmodel.runtimes.environments import RuntimeSpec

# A made-up next runtime: a GPU edition, XLA, grouped convolutions run; channels-first refused.
TF_2_8 = table.Runtime("2.8", "3.10", "tensorflow-cpu==2.8.0", ("numpy==1.22.4", "protobuf==3.20.3"))
WITH_2_8 = (*table.ROWS, TF_2_8)


def _rules(rows):
    return {r.name: (r.runtimes, r.why) for r in semantic.rules(rows)}


def test_the_real_table_derives_what_the_package_had():
    assert runtimes.RUNTIME_VERSIONS == ("1.12", "1.14", "1.15", "2.3", "2.4", "2.7")
    assert list(runtimes.PROCESSORS) == [
        "tensorflow_cpu_1.12", "tensorflow_cpu_1.14", "tensorflow_cpu_1.15", "tensorflow_cpu_2.3",
        "tensorflow_cpu_2.4", "tensorflow_cpu_2.7",
        "tensorflow_gpu_1.12", "tensorflow_gpu_1.14", "tensorflow_gpu_1.15", "tensorflow_gpu_2.4",
        "tensorflow_gpu_2.7",
    ]
    assert environments.RUNTIMES["1.12"] == RuntimeSpec(
        "1.12", "3.6", "tensorflow==1.12.0", ("protobuf==3.19.6",), pip="pip==21.3.1"
    )
    assert environments.RUNTIMES["2.7"] == RuntimeSpec(
        "2.7", "3.9", "tensorflow-cpu==2.7.0", ("numpy==1.21.6", "protobuf==3.20.3")
    )
    assert list(environments.RUNTIMES) == list(runtimes.RUNTIME_VERSIONS)
    assert _rules(None) == {
        "xla-must-compile": (
            ("1.12", "1.14", "1.15"),
            "an XLA must-compile function (tf.function(jit_compile=True)) could not be inlined; "
            "runtimes before 2.3 do not compile it and run its body with CPU kernels written for XLA",
        ),
        "channels-first-on-cpu": (
            runtimes.RUNTIME_VERSIONS, "its CPU kernel only supports channels-last (NHWC/NDHWC) data"
        ),
        "grouped-convolution-on-cpu": (
            ("1.12", "1.14", "1.15", "2.3", "2.4"),
            "CPU convolution kernels refuse grouped convolutions (1.12 at load, 1.14-2.4 at run)",
        ),
    }
    assert {r.name: (r.runtimes, r.why) for r in semantic.RULES} == _rules(None)
    assert (table.version_span(), table.count_word()) == ("1.12-2.7", "six")
    assert table.python_minors_text() == "3.6 for TF 1.12, 3.7 for 1.14/1.15, 3.8 for 2.3/2.4, 3.9 for 2.7"


def test_a_new_row_reaches_processors_environments_rules_and_messages():
    assert table.runtime_versions(WITH_2_8) == (*runtimes.RUNTIME_VERSIONS, "2.8")
    codes = list(table.processors(WITH_2_8))
    # CPU codes oldest first, then the GPU codes: the new ones at the end of each group.
    assert codes == [
        *[c for c in runtimes.PROCESSORS if "cpu" in c], "tensorflow_cpu_2.8",
        *[c for c in runtimes.PROCESSORS if "gpu" in c], "tensorflow_gpu_2.8",
    ]
    no_gpu = dataclasses.replace(TF_2_8, gpu=False)
    assert "tensorflow_gpu_2.8" not in table.processors((*table.ROWS, no_gpu))

    specs = environments.runtime_specs(WITH_2_8)
    assert specs["2.8"] == RuntimeSpec("2.8", "3.10", "tensorflow-cpu==2.8.0", ("numpy==1.22.4", "protobuf==3.20.3"))
    assert specs["2.8"].requirements == ["tensorflow-cpu==2.8.0", "numpy==1.22.4", "protobuf==3.20.3"]

    rules = _rules(WITH_2_8)
    assert rules["xla-must-compile"] == _rules(None)["xla-must-compile"]
    assert rules["channels-first-on-cpu"][0] == (*runtimes.RUNTIME_VERSIONS, "2.8")
    assert rules["grouped-convolution-on-cpu"] == _rules(None)["grouped-convolution-on-cpu"]
    # A 2.8 that refused grouped convolutions at run time widens the span of the reason.
    refusing = dataclasses.replace(TF_2_8, grouped_convolutions_refused=table.AT_RUN)
    assert _rules((*table.ROWS[:-1], refusing))["grouped-convolution-on-cpu"] == (
        ("1.12", "1.14", "1.15", "2.3", "2.4", "2.8"),
        "CPU convolution kernels refuse grouped convolutions (1.12 at load, 1.14-2.8 at run)",
    )

    assert (table.version_span(rows=WITH_2_8), table.count_word(WITH_2_8)) == ("1.12-2.8", "seven")
    assert table.or_list(table.python_minors(WITH_2_8)) == "3.6, 3.7, 3.8, 3.9 or 3.10"
    assert table.python_minors_text(WITH_2_8).endswith(", 3.9 for 2.7, 3.10 for 2.8")


def test_messages_made_at_call_time_follow_the_table(monkeypatch):
    real = errors.stage_failed("rewrite", ["serving_default"], ValueError("boom")).message
    assert "rewriting the frozen graph for TF 1.12-2.7 and checking it" in real
    monkeypatch.setattr(table, "ROWS", WITH_2_8)
    assert table.runtime_versions()[-1] == "2.8"
    message = errors.stage_failed("rewrite", ["serving_default"], ValueError("boom")).message
    assert message == real.replace("TF 1.12-2.7", "TF 1.12-2.8")


@pytest.mark.parametrize("command,text", [
    ("check-runtime", "Check all {count} runtimes (TF {span})."),
    ("prepare-runtimes", "(default: all {count}, {span})"),
])
def test_cli_help_names_the_table(command, text):
    out = CliRunner().invoke(cli, [command, "--help"], terminal_width=400).output
    assert text.format(count=table.count_word(), span=table.version_span()) in " ".join(out.split())


def test_the_prepare_runtimes_help_lists_the_cpythons():
    out = CliRunner().invoke(cli, ["prepare-runtimes", "--help"], terminal_width=400).output
    assert "Each needs its CPython (3.6, 3.7, 3.8 or 3.9) on PATH" in " ".join(out.split())
