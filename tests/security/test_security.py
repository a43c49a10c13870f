"""Security: no unpickling unless the user stored custom objects, no unsafe archive extraction,
servers bind loopback unless told otherwise. See docs/security.md."""

import ast
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import mlflow_eas_savedmodel as mes
from support.mlmodel import read_flavor

PACKAGE_DIR = Path(mes.__file__).parent
PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib", ".dill")


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory, mlp):
    path = tmp_path_factory.mktemp("security") / "plain"
    mes.save_model(mlp, path)
    return path


@pytest.fixture
def unpickling_forbidden(monkeypatch):
    """Every pickle/cloudpickle load entry point raises: a load that unpickles fails loudly."""
    import cloudpickle

    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        raise AssertionError("unpickling attempted")

    for module in (pickle, cloudpickle):
        monkeypatch.setattr(module, "load", forbidden)
        monkeypatch.setattr(module, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    return calls


def test_model_without_custom_objects_has_no_pickle_file(plain_model):
    files = [os.path.join(d, f) for d, _, fs in os.walk(plain_model) for f in fs]
    assert files, "nothing saved"
    assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    flavor = read_flavor(plain_model)
    assert "custom_objects" not in flavor
    # No pickle protocol header (0x80 0x02..0x05) at the start of any file either.
    for path in files:
        with open(path, "rb") as f:
            head = f.read(2)
        assert not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5), path
    reqs = (plain_model / "requirements.txt").read_text()
    assert "cloudpickle" not in reqs


def test_loading_never_unpickles(plain_model, unpickling_forbidden, x4, mlp):
    import mlflow.pyfunc

    handle = mes.load_model(str(plain_model), device="cpu")
    assert handle.custom_objects is None
    np.testing.assert_allclose(handle.predict(x4)["scores"], mlp(x4).numpy(), rtol=1e-5, atol=1e-6)
    model = mlflow.pyfunc.load_model(str(plain_model), model_config={"device": "cpu"})
    np.testing.assert_allclose(model.predict(x4), mlp(x4).numpy(), rtol=1e-5, atol=1e-6)
    assert unpickling_forbidden == []


def test_custom_objects_are_the_one_thing_unpickled(tmp_path, tf, x4, monkeypatch):
    import cloudpickle
    import keras

    class Scale(keras.layers.Layer):  # not registered: loading the file needs custom_objects
        def call(self, x):
            return x * 3.0

    inp = keras.Input((4,), name="image")
    model = keras.Model(inp, Scale(name="scale")(inp))
    model.save(tmp_path / "custom.keras")
    mes.save_model(str(tmp_path / "custom.keras"), tmp_path / "model", custom_objects={"Scale": Scale})
    stored = [f for f in os.listdir(tmp_path / "model") if f.endswith(PICKLE_SUFFIXES)]
    assert stored == ["custom_objects.cloudpickle"]
    assert "cloudpickle" in (tmp_path / "model" / "requirements.txt").read_text()

    loads = []
    real_load = cloudpickle.load
    monkeypatch.setattr(cloudpickle, "load", lambda f, *a, **k: loads.append(f.name) or real_load(f, *a, **k))
    handle = mes.load_model(str(tmp_path / "model"), device="cpu")
    assert [os.path.basename(p) for p in loads] == ["custom_objects.cloudpickle"]
    assert set(handle.custom_objects) == {"Scale"}
    (outputs,) = handle.predict(x4).values()
    np.testing.assert_allclose(outputs, x4 * 3, rtol=1e-6)


def test_pyfunc_checks_custom_objects_but_unpickles_them_only_when_asked(tmp_path, tf, x4, monkeypatch):
    import cloudpickle
    import keras
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 3.0

    inp = keras.Input((4,), name="image")
    keras.Model(inp, Scale(name="scale")(inp)).save(tmp_path / "custom.keras")
    mes.save_model(str(tmp_path / "custom.keras"), tmp_path / "model", custom_objects={"Scale": Scale})
    loads = []
    real_load = cloudpickle.load
    monkeypatch.setattr(cloudpickle, "load", lambda f, *a, **k: loads.append(f.name) or real_load(f, *a, **k))
    config = {"device": "cpu"}
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"), model_config=config)
    np.testing.assert_allclose(model.predict(x4), x4 * 3, rtol=1e-6)
    assert loads == []  # the frozen graph never needs them
    handle = model.get_raw_model()
    assert set(handle.custom_objects) == {"Scale"} and handle.custom_objects is handle.custom_objects
    assert [os.path.basename(p) for p in loads] == ["custom_objects.cloudpickle"]

    # Replaced after a load, before anything asked for them: checked again, never unpickled.
    unasked = mlflow.pyfunc.load_model(str(tmp_path / "model"), model_config=config).get_raw_model()
    (tmp_path / "model" / "custom_objects.cloudpickle").write_bytes(pickle.dumps({"other": 1}))
    with pytest.raises(MlflowException, match="does not match the SHA-256 recorded .* was not unpickled"):
        unasked.custom_objects
    assert len(loads) == 1


def _calls_in(path):
    """``(line, dotted call name)`` of every call in a Python file."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                yield node.lineno, func.attr
            elif isinstance(func, ast.Name):
                yield node.lineno, func.id


def test_package_extracts_no_archives():
    """The package writes archives (EAS upload) but never extracts one: there is no extraction
    code that could follow an absolute or '..' member name. A new extraction must come with a
    member-name check and a test; this test then points at it."""
    extraction = {"extractall", "extract", "unpack_archive", "extractfile", "_extract_member"}
    found = [
        f"{path.relative_to(PACKAGE_DIR)}:{line} {name}()"
        for path in PACKAGE_DIR.rglob("*.py")
        for line, name in _calls_in(path)
        if name in extraction
    ]
    assert found == []


@pytest.mark.parametrize("archive", ["tar.gz", "zip"])
def test_exported_archives_hold_only_relative_member_names(plain_model, tmp_path, archive):
    from mlflow_eas_savedmodel.eas.package import write_eas_package

    result = write_eas_package(str(plain_model), str(tmp_path / "upload"), archive=archive)
    if archive == "zip":
        with zipfile.ZipFile(result["path"]) as zf:
            names = zf.namelist()
    else:
        with tarfile.open(result["path"], "r:gz") as tar:
            names = [m.name for m in tar.getmembers()]
            assert all(m.isfile() or m.isdir() for m in tar.getmembers())  # no links
    assert "saved_model.pb" in names
    for name in names:
        assert not name.startswith(("/", "\\")) and not os.path.isabs(name), name
        assert ".." not in name.replace("\\", "/").split("/"), name


def test_eas_endpoint_binds_loopback_by_default(plain_model):
    import inspect

    from mlflow_eas_savedmodel.eas import endpoint as endpoint_module
    from mlflow_eas_savedmodel.eas.commands import serve_eas_command

    handle = mes.load_model(str(plain_model), device="cpu")
    with endpoint_module.EasEndpoint(handle, "loopback") as ep:
        assert ep.host == "127.0.0.1"
        assert ep._server.socket.getsockname()[0] == "127.0.0.1"
    for function in (endpoint_module.serve_eas, endpoint_module.EasEndpoint.__init__):
        assert inspect.signature(function).parameters["host"].default == "127.0.0.1"
    host_option = next(p for p in serve_eas_command.params if p.name == "host")
    assert host_option.default == "127.0.0.1"
