"""The op-registry data of the EAS runtimes: schema, agreement with the reference lists, facts."""

import gzip
import json
import os
import subprocess
import sys

import pytest
from conftest import runtime_versions
from support.paths import REPO

from mlflow_eas_savedmodel.runtimes import RUNTIME_VERSIONS as VERSIONS
from mlflow_eas_savedmodel.runtimes.table import ROWS

REGISTRY_DIR = REPO / "mlflow_eas_savedmodel" / "runtimes" / "registries"
REFERENCE_DIR = REPO.parent / "shared" / "reference" / "eas-runtimes"
REFERENCED = ("1.12", "1.14", "1.15", "2.3")
# Each registry was dumped from the wheel and CPython of its row of the runtime table.
WHEELS = {r.version: (r.wheel, r.python_minor) for r in ROWS}

_cache = {}


def registry(version):
    if version not in _cache:
        with gzip.open(REGISTRY_DIR / ("tf-%s.json.gz" % version), "rt", encoding="utf-8") as fh:
            _cache[version] = json.load(fh)
    return _cache[version]


def parse_reference(path):
    """``OpName attr1,attr2=default,...`` -> {op: {attr: default text or None}}."""
    ops = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        attrs = {}
        if rest:
            for item in rest.split(","):
                key, eq, value = item.partition("=")
                attrs[key] = value.replace("\\u002c", ",").replace("\\u0020", " ") if eq else None
        ops[name] = attrs
    return ops


@pytest.mark.parametrize("version", VERSIONS)
def test_registry_schema(version):
    data = registry(version)
    assert set(data) == {"tensorflow", "git_version", "graph_def_version", "python", "wheel", "ops"}
    wheel, python_minor = WHEELS[version]
    assert data["wheel"] == wheel
    assert data["tensorflow"] == wheel.split("==")[1]
    assert data["python"].startswith(python_minor + ".")
    assert isinstance(data["graph_def_version"], int) and data["graph_def_version"] > 0
    assert data["git_version"].startswith("v")
    assert len(data["ops"]) > 1000
    for name, op in data["ops"].items():
        assert set(op) == {"inputs", "outputs", "attrs"}, name
        assert all(isinstance(a, str) for a in op["inputs"] + op["outputs"]), name
        assert all(v is None or isinstance(v, str) for v in op["attrs"].values()), name
    matmul = data["ops"]["MatMul"]
    assert matmul["inputs"] == ["a", "b"] and matmul["outputs"] == ["product"]
    assert matmul["attrs"]["T"] is None and matmul["attrs"]["transpose_a"] == "false"


def test_graph_def_versions_increase():
    gdv = [registry(v)["graph_def_version"] for v in VERSIONS]
    assert gdv == sorted(gdv)
    assert gdv[:4] == [27, 38, 134, 440]


@pytest.mark.parametrize("version", REFERENCED)
def test_registry_agrees_with_reference_lists(version):
    ref_path = REFERENCE_DIR / ("ops-tf%s.txt" % version)
    if not REFERENCE_DIR.is_dir() or not ref_path.exists():
        pytest.skip("reference lists not available at %s" % REFERENCE_DIR)
    ref = parse_reference(ref_path)
    ops = registry(version)["ops"]
    assert set(ops) == set(ref)
    for name, ref_attrs in ref.items():
        assert set(ops[name]["attrs"]) == set(ref_attrs), name
        # Same rendering of defaults as the reference too (None = no default).
        assert ops[name]["attrs"] == ref_attrs, name


def test_newer_runtimes_present_and_grow():
    names = {v: set(registry(v)["ops"]) for v in VERSIONS}
    assert len(names["2.4"]) > len(names["2.3"])
    assert len(names["2.7"]) > len(names["2.4"])
    assert "Einsum" in names["2.4"] and "Einsum" in names["2.7"]


def test_known_facts():
    ops = {v: registry(v)["ops"] for v in VERSIONS}
    for v in ("1.12", "1.14"):
        assert "Einsum" not in ops[v]
    for v in ("1.15", "2.3", "2.4", "2.7"):
        assert "Einsum" in ops[v]
    assert "BatchMatMulV2" not in ops["1.12"]
    assert "BatchMatMulV2" in ops["1.14"]
    assert "SelectV2" not in ops["1.12"]
    assert "SelectV2" in ops["1.14"]
    for v in VERSIONS:
        assert "DisableCopyOnRead" not in ops[v], v
        assert "VarHandleOp" in ops[v]
        assert "debug_name" not in ops[v]["VarHandleOp"]["attrs"], v
        assert "VariableV2" in ops[v]
        assert "grad_a" not in ops[v]["MatMul"]["attrs"], v
    tl_112 = ops["1.12"]["TensorListGetItem"]["inputs"]
    tl_114 = ops["1.14"]["TensorListGetItem"]["inputs"]
    assert len(tl_112) == len(tl_114) - 1
    assert tl_114 == ["input_handle", "index", "element_shape"]


def test_dump_script_runs_under_current_tensorflow(tmp_path):
    """The same script that made the files runs on our TF 2.21 and agrees with its reference."""
    out = tmp_path / "tf-current.json.gz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "dump_op_registry.py"), "-o", str(out)],
        check=True,
        env=env,
        cwd=str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with gzip.open(out, "rt") as fh:
        data = json.load(fh)
    import tensorflow as tf

    assert data["tensorflow"] == tf.__version__
    assert data["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert "VarHandleOp" in data["ops"] and "debug_name" in data["ops"]["VarHandleOp"]["attrs"]
    assert "DisableCopyOnRead" in data["ops"]
    ref_path = REFERENCE_DIR / ("ops-tf%s.txt" % ".".join(tf.__version__.split(".")[:2]))
    if ref_path.exists():
        ref = parse_reference(ref_path)
        # The reference process had two GPU-copy internal ops registered that a plain
        # `import tensorflow` of the CPU wheel does not register.
        assert set(data["ops"]) <= set(ref)
        assert all(n.startswith("_") for n in set(ref) - set(data["ops"]))
        for name in data["ops"]:
            assert data["ops"][name]["attrs"] == ref[name], name


@pytest.mark.runtime
def test_registries_regenerate_identically():
    """scripts/regenerate_registries.py reproduces the committed files byte for byte."""
    versions = runtime_versions()
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "regenerate_registries.py"), "--check", *versions],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(REPO),
        timeout=3600,
    )
    out = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, out[-3000:]
    assert "differ: none" in out
