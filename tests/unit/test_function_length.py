"""No function of the package has more than 60 lines of code.

A line of code is a non-blank line of the body that is not only a comment; the docstring does
not count, and a nested function's lines count for the function around it too. A longer
function is cut into named steps, not squeezed.
"""

import ast

import pytest
from support.paths import REPO

MAX_LINES = 60
PACKAGE_DIR = REPO / "mlflow_eas_savedmodel"


def code_lines(function, lines):
    """Lines of code in ``function``'s body (``lines``: the file's lines)."""
    body = function.body
    skip = set()
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        skip = set(range(first.lineno, first.end_lineno + 1))
    count = 0
    for number in range(first.lineno, function.end_lineno + 1):
        text = lines[number - 1].strip()
        if number not in skip and text and not text.startswith("#"):
            count += 1
    return count


def long_functions(source, where):
    lines = source.splitlines()
    return [
        f"{where}:{node.lineno} {node.name} ({code_lines(node, lines)} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node, lines) > MAX_LINES
    ]


def test_no_function_has_over_60_lines_of_code():
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        found += long_functions(path.read_text(encoding="utf-8"), path.relative_to(PACKAGE_DIR.parent))
    assert not found, "cut these into named steps:\n" + "\n".join(found)


def _function(n_code, docstring_lines=0, comments=0, blanks=0):
    body = ['    """' + "\n" * docstring_lines + '    """'] if docstring_lines else []
    body += ["    # why"] * comments + [""] * blanks + [f"    x{i} = {i}" for i in range(n_code)]
    return "def f():\n" + "\n".join(body) + "\n"


@pytest.mark.parametrize(
    "source, too_long",
    [
        (_function(60), False),
        (_function(61), True),
        (_function(60, docstring_lines=20, comments=10, blanks=10), False),
        ("def f():\n    def g():\n" + "".join(f"        y{i} = {i}\n" for i in range(60)), True),
    ],
)
def test_the_count_excludes_docstring_comments_and_blank_lines(source, too_long):
    assert bool(long_functions(source, "m.py")) is too_long
