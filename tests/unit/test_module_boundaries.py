"""No module of the package reaches into another module's private names.

A leading underscore means "this module's own": ``from x import _helper`` or ``x._helper`` in
another module couples the two behind the name's back, so every such use is a failure here.
Names private to one module stay free inside it. Private *modules* are imported only where that
is their design, each named in :data:`DESIGNED_PRIVATE_MODULES` with the reason.

The two old-runtime scripts (``runtimes/_runner.py``, ``deployments/_local_server.py``) run
outside the package; the server receives the runner as a module object (``runner``), named in
:data:`MODULE_NAMES_WITHOUT_IMPORT` so its attribute reads are checked like imports.
"""

import ast

import pytest
from support.paths import REPO

PACKAGE = "mlflow_eas_savedmodel"
PACKAGE_DIR = REPO / PACKAGE

# Private modules other modules may import from, and why.
DESIGNED_PRIVATE_MODULES = {
    f"{PACKAGE}._tensorflow": "the one lazy TensorFlow import (and its log quieting) every module uses",
    f"{PACKAGE}.runtimes._npz_format": "the .npz wire format shared by runtime_process and _runner.py",
}

# Names a module uses for another module without importing it by the package's name.
MODULE_NAMES_WITHOUT_IMPORT = {
    f"{PACKAGE}.deployments._local_server": {
        "runner": f"{PACKAGE}.runtimes._runner",
        "_runner": f"{PACKAGE}.runtimes._runner",
    },
}

def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def _module_name(path, root):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE] + parts)


def package_sources():
    """``{module name: (source, is_package)}`` of every module of the package."""
    return {
        _module_name(p, PACKAGE_DIR): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for p in sorted(PACKAGE_DIR.rglob("*.py"))
    }


def _absolute(module, is_package, node):
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _private_module(name):
    """The first private module on the path of ``name`` (``a._b.c`` -> ``a._b``), or ``None``."""
    parts = name.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if _is_private(part):
            return ".".join(parts[: i + 1])
    return None


def find_violations(sources):
    """``{"<module> uses <module>.<private name>"}`` over ``{module: (source, is_package)}``."""
    found = set()
    modules = set(sources)
    for module, (source, is_package) in sources.items():
        tree = ast.parse(source)
        aliases = dict(MODULE_NAMES_WITHOUT_IMPORT.get(module, {}))

        def use(target):
            owner = _private_module(target)
            if owner is not None and owner != module and not module.startswith(owner + "."):
                if owner not in DESIGNED_PRIVATE_MODULES:
                    found.add(f"{module} uses {target}")

        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node)
                if not base.startswith(PACKAGE):
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full in modules:
                        aliases[alias.asname or alias.name] = full
                    use(full)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(PACKAGE):
                        use(alias.name)
                        if alias.asname:
                            aliases[alias.asname] = alias.name
                        else:  # ``import a.b`` binds ``a``
                            aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain, inner = [node.attr], node.value
                while isinstance(inner, ast.Attribute):
                    chain.insert(0, inner.attr)
                    inner = inner.value
                if isinstance(inner, ast.Name) and inner.id in aliases:
                    target = aliases[inner.id]
                    for attr in chain:
                        if _is_private(attr):
                            use(f"{target}.{attr}")
                            break
                        target = f"{target}.{attr}"
    return found


def test_no_module_uses_another_modules_private_names():
    found = sorted(find_violations(package_sources()))
    assert not found, "private names used across modules (make them public or keep them in one module):\n" + "\n".join(found)


def test_designed_private_modules_exist():
    sources = package_sources()
    assert set(DESIGNED_PRIVATE_MODULES) <= set(sources)
    assert {m for names in MODULE_NAMES_WITHOUT_IMPORT.values() for m in names.values()} <= set(sources)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from mlflow_eas_savedmodel.b import _helper\n", "mlflow_eas_savedmodel.a uses mlflow_eas_savedmodel.b._helper"),
        ("from mlflow_eas_savedmodel import b\nb._helper()\n", "mlflow_eas_savedmodel.a uses mlflow_eas_savedmodel.b._helper"),
        ("import mlflow_eas_savedmodel.b\nmlflow_eas_savedmodel.b._X\n", "mlflow_eas_savedmodel.a uses mlflow_eas_savedmodel.b._X"),
        ("from .b import _helper\n", "mlflow_eas_savedmodel.a uses mlflow_eas_savedmodel.b._helper"),
        ("from mlflow_eas_savedmodel._private import f\n", "mlflow_eas_savedmodel.a uses mlflow_eas_savedmodel._private.f"),
    ],
)
def test_the_finder_sees_each_kind_of_private_use(source, expected):
    sources = {
        "mlflow_eas_savedmodel.a": (source, False),
        "mlflow_eas_savedmodel.b": ("_helper = _X = 1\n", False),
        "mlflow_eas_savedmodel._private": ("f = 1\n", False),
    }
    assert find_violations(sources) == {expected}


def test_the_finder_allows_own_names_public_names_and_the_designed_private_modules():
    sources = {
        "mlflow_eas_savedmodel.a": (
            "from mlflow_eas_savedmodel._tensorflow import import_tensorflow\n"
            "from mlflow_eas_savedmodel import b as _b\n"
            "_mine = _b.public\n"
            "import numpy\n"
            "numpy._private\n",
            False,
        ),
        "mlflow_eas_savedmodel.b": ("public = 1\n", False),
    }
    assert find_violations(sources) == set()
