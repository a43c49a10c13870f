"""Paths the tests name, computed from this file so that no test counts its own folder depth."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]  # tests/
REPO = TESTS.parent  # the repository root (README.md, examples/, scripts/, mlflow_eas_savedmodel/)
SUPPORT = TESTS / "support"  # helper modules, some of them run as scripts in child processes
