"""The README's "From experiment to EAS" block, run as written, its output checked line by line.

The ``console`` block is parsed into commands (``$ `` lines and their ``> `` continuations) and
the output shown after each. The commands run in one bash process (so ``export`` and background
jobs carry over), in an empty folder, with this venv's ``bin`` first on PATH (as after
``source .venv/bin/activate``); before each command the script prints a marker, so every
command's output (stdout and stderr) is compared with what the README shows for it: the same
lines in the same order, ``...`` matching any text within a line. TensorFlow's C++ start-up
lines (printed by the block's own ``import keras``) are the only lines ignored.
"""

import os
import re
import signal
import subprocess
import sys

import pytest

from mlflow_eas_savedmodel._tensorflow import _ABSL_PREAMBLE, _CPP_LOG_LINE
from support.paths import REPO

README = str(REPO / "README.md")
SECTION = "## From experiment to EAS"
MARKER = "@@@ README command {} @@@"

pytestmark = [pytest.mark.server, pytest.mark.runtime]


def readme_steps():
    """``[(command text, [expected output lines])]`` of the section's console block."""
    text = open(README).read()
    section = text[text.index(SECTION):]
    block = section[section.index("```console\n") + len("```console\n"):]
    block = block[:block.index("\n```")]
    steps = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append([line[2:], []])
        elif line.startswith("> ") or line == ">":
            steps[-1][0] += "\n" + line[2:]
        else:
            steps[-1][1].append(line)
    return [(command, expected) for command, expected in steps]


def _pattern(line):
    return re.compile(".*".join(re.escape(part) for part in line.split("...")) + r"\Z")


def _is_tensorflow_banner(line):
    return bool(_CPP_LOG_LINE.match(line)) or line.startswith(_ABSL_PREAMBLE) or line.startswith(
        "To enable the following instructions:"
    )


def test_readme_block_is_parsed():
    steps = readme_steps()
    commands = [command.split()[0] for command, _ in steps]
    assert commands[:2] == ["export", "python"] and commands[-1] == "kill"
    assert sum(command.startswith("mlflow-eas-savedmodel") for command, _ in steps) >= 8


def test_readme_from_experiment_to_eas_runs_as_written(tmp_path):
    steps = readme_steps()
    script = ["exec 2>&1", "set -e"]
    for i, (command, _) in enumerate(steps):
        script += [f"echo '{MARKER.format(i)}'", command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    process = subprocess.Popen(
        ["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=540)
    finally:
        try:  # the block's servers and their workers, if a step failed before `kill`
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, output

    chunks = re.split(r"^@@@ README command (\d+) @@@\n", output, flags=re.M)
    actual = {int(chunks[i]): chunks[i + 1] for i in range(1, len(chunks), 2)}
    assert sorted(actual) == list(range(len(steps))), output
    for i, (command, expected) in enumerate(steps):
        lines = [line for line in actual[i].splitlines() if not _is_tensorflow_banner(line)]
        mismatch = f"README command {command.splitlines()[0]!r} printed:\n{actual[i]}"
        assert len(lines) == len(expected), mismatch
        for want, got in zip(expected, lines):
            assert _pattern(want).match(got), f"{mismatch}\nexpected: {want}\ngot:      {got}"
