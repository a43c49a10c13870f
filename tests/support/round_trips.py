"""Declarative round trips for the non-Keras sources: sessions, checkpoints, SavedModel folders.

A test file declares its models as :class:`Case` rows; one generic test per source kind runs
every row through :func:`run`: ``save_model`` (or ``log_model`` into a real sqlite tracking store),
then ``mlflow_eas_savedmodel.load_model``, ``mlflow.pyfunc`` and TF's own TF1 loader by tensor
names (what EAS does), each compared numerically with the answers of the original model, plus
what the MLmodel must record about the export. ``tests/flavor/test_keras_architectures.py`` is the
same idea for Keras models.

A case's ``build`` is a context manager: it builds the source (or takes it from a fixture),
yields an :class:`Export` with the expected answers computed from that source, and cleans up
after the checks ran (e.g. closes a session it opened).
"""

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import mlflow
import numpy as np
import pytest

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel import runtimes
from support.mlmodel import read_flavor

# Every export must load on these two (the processors the runtime tests run by default).
EAS_PROCESSORS = {"tensorflow_cpu_1.15", "tensorflow_cpu_2.3"}


@dataclasses.dataclass
class Predict:
    """One ``handle.predict`` call and what it must return.

    ``outputs`` maps output keys to the expected arrays; the key ``None`` stands for the
    signature's only output, whatever its name. ``rtol=None`` means exactly equal.
    """

    inputs: Any
    outputs: Dict[Optional[str], Any]
    signature: Optional[str] = None
    rtol: Optional[float] = None
    atol: float = 0.0
    complete: bool = False  # the outputs are all the signature returns


@dataclasses.dataclass
class PyfuncPredict:
    """One ``mlflow.pyfunc`` ``predict`` call (``params={"signature_name": ...}`` if given)."""

    inputs: Any
    expected: Any
    signature: Optional[str] = None
    rtol: Optional[float] = None


@dataclasses.dataclass
class TensorRun:
    """One ``sess.run(fetch, feeds)`` in TF's TF1 loader, by the user's own tensor names."""

    fetch: str
    feeds: Dict[str, Any]
    expected: Any
    rtol: Optional[float] = None


@dataclasses.dataclass
class Export:
    """What a case's ``build`` yields: the source, its save options and the expected answers."""

    source: Any
    kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    predicts: Sequence[Predict] = ()
    pyfunc: Sequence[PyfuncPredict] = ()
    tensor_runs: Sequence[TensorRun] = ()
    after_save: Optional[Callable[[], None]] = None  # e.g. deletes a file EAS will not have
    # Every ``predicts`` call again in TF's TF1 loader, fed and fetched by the tensor names the
    # saved SignatureDef gives (what EAS does when the names are not the user's own).
    predicts_in_tf1_loader: bool = False
    # (conf, saved_model_dir, handle) -> None: assertions only this case makes
    checks: Optional[Callable[[dict, str, Any], None]] = None


@dataclasses.dataclass
class Case:
    """One model of a source kind and what its export must say about it."""

    name: str
    build: Callable  # (tf, tmp_path, **fixtures) -> context manager of Export
    fixtures: Tuple[str, ...] = ()  # fixture names passed to ``build`` by keyword
    log: bool = False  # through log_model and a sqlite tracking store instead of save_model
    signatures: Optional[Sequence[str]] = None  # sorted SignatureDef names
    default_signature: Optional[str] = None
    conf: Dict[tuple, Any] = dataclasses.field(default_factory=dict)  # flavor conf path -> value
    conf_keys: Dict[tuple, Sequence[str]] = dataclasses.field(default_factory=dict)  # path -> sorted keys
    notes: Tuple[str, ...] = ()  # conversion notes that must be there, word for word
    note_prefixes: Tuple[str, ...] = ()  # ... that must start a note
    notes_absent: Tuple[str, ...] = ()
    first_note_prefix: Optional[str] = None
    eas_compatible: bool = True  # claimed for EAS_PROCESSORS, and the saved graph passes their static check
    variables_v2: Optional[bool] = None  # has VariableV2 (True) / no variables (False), never VarHandleOp
    devices_cleared: bool = False  # no node of the saved graph is pinned to a device
    verified: bool = False  # every signature's verification run "matches the source"
    input_example_saved: bool = False
    load_kwargs: Dict[str, Any] = dataclasses.field(default_factory=lambda: {"device": "cpu"})


def params(cases):
    return [pytest.param(c, id=c.name) for c in cases]


def saved_graph_def(saved_model_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return saved.meta_graphs[0].graph_def


def flavor_conf(local_dir):
    return read_flavor(local_dir)


def _assert_close(actual, expected, rtol, atol=0.0, err_msg=""):
    if rtol is None:
        np.testing.assert_array_equal(actual, expected, err_msg=err_msg)
    else:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=err_msg)


def _lookup(conf, path):
    value = conf
    for key in path:
        value = value[key]
    return value


def run(case, source_kind, request, tmp_path, tf):
    """Saves, loads and checks ``case`` (a :class:`Case` of the source kind ``source_kind``)."""
    fixtures = {name: request.getfixturevalue(name) for name in case.fixtures}
    if case.log:
        request.getfixturevalue("tracking_uri")
    with case.build(tf, tmp_path, **fixtures) as export:
        if case.log:
            with mlflow.start_run():
                info = mes.log_model(export.source, name="model", **export.kwargs)
            model_uri = info.model_uri
            local = mlflow.artifacts.download_artifacts(model_uri)
        else:
            model_uri = local = str(tmp_path / "model")
            mes.save_model(export.source, local, **export.kwargs)
        if export.after_save:
            export.after_save()
        _check(case, source_kind, export, model_uri, local, tf)


def _check(case, source_kind, export, model_uri, local, tf):
    conf = flavor_conf(local)
    assert conf["source"] == source_kind
    assert conf["saved_model_dir"] == "savedmodel"
    saved_model_dir = os.path.join(local, conf["saved_model_dir"])
    if case.signatures is not None:
        assert sorted(conf["signature_defs"]) == list(case.signatures)
    if case.default_signature is not None:
        assert conf["default_signature"] == case.default_signature
    for path, value in case.conf.items():
        assert _lookup(conf, path) == value, path
    for path, keys in case.conf_keys.items():
        assert sorted(_lookup(conf, path)) == list(keys), path
    notes = conf["conversion_notes"]
    for note in case.notes:
        assert note in notes, (note, notes)
    for prefix in case.note_prefixes:
        assert any(n.startswith(prefix) for n in notes), (prefix, notes)
    for note in case.notes_absent:
        assert note not in notes, (note, notes)
    if case.first_note_prefix is not None:
        assert notes[0].startswith(case.first_note_prefix), notes
    if case.verified:
        results = {r["result"] for r in conf["verification"]["run"]["signatures"].values()}
        assert results == {"matches the source"}, conf["verification"]
    if case.input_example_saved:
        assert os.path.exists(os.path.join(local, "input_example.json"))

    graph_def = saved_graph_def(saved_model_dir)
    if case.eas_compatible:
        assert EAS_PROCESSORS <= set(conf["eas_processors"]), conf["eas_processors"]
        compatible, problems = runtimes.check_all(graph_def)
        assert EAS_PROCESSORS <= set(compatible), problems
    if case.variables_v2 is not None:
        ops = {n.op for n in graph_def.node}
        assert ("VariableV2" in ops) == case.variables_v2 and "VarHandleOp" not in ops
    if case.devices_cleared:
        assert not any(n.device for n in graph_def.node)

    handle = mes.load_model(model_uri, **case.load_kwargs)
    try:
        if case.signatures is not None:
            assert sorted(handle.signatures) == list(case.signatures)
        if case.default_signature is not None:
            assert handle.default_signature == case.default_signature
        for call in export.predicts:
            _check_predict(handle, call)
        if export.checks:
            export.checks(conf, saved_model_dir, handle)
    finally:
        handle.close()

    if export.pyfunc:
        pyfunc_model = mlflow.pyfunc.load_model(model_uri)
        for call in export.pyfunc:
            kwargs = {} if call.signature is None else {"params": {"signature_name": call.signature}}
            _assert_close(pyfunc_model.predict(call.inputs, **kwargs), call.expected, call.rtol)

    if export.predicts_in_tf1_loader:
        _check_predicts_in_tf1_loader(export.predicts, saved_model_dir, tf)

    if export.tensor_runs:
        with tf.compat.v1.Session(graph=tf.Graph()) as sess:
            meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], saved_model_dir)
            if case.signatures is not None:
                assert sorted(meta.signature_def) == list(case.signatures)
            for run_ in export.tensor_runs:
                _assert_close(sess.run(run_.fetch, run_.feeds), run_.expected, run_.rtol)


def _check_predicts_in_tf1_loader(predicts, saved_model_dir, tf):
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], saved_model_dir)
        for call in predicts:
            signature_def = meta.signature_def[call.signature or "serving_default"]
            if isinstance(call.inputs, dict):
                feeds = {signature_def.inputs[k].name: v for k, v in call.inputs.items()}
            else:
                (only,) = signature_def.inputs.values()
                feeds = {only.name: call.inputs}
            for key, expected in call.outputs.items():
                if key is None:
                    (key,) = signature_def.outputs
                actual = sess.run(signature_def.outputs[key].name, feeds)
                _assert_close(actual, expected, call.rtol, call.atol, err_msg=f"TF1 loader {call.signature}/{key}")


def _check_predict(handle, call):
    if call.signature is None:
        actual = handle.predict(call.inputs)
    else:
        actual = handle.predict(call.inputs, signature_name=call.signature)
    if call.complete:
        assert set(actual) == set(call.outputs)
    for key, expected in call.outputs.items():
        if key is None:
            (key,) = handle.signatures[call.signature or handle.default_signature]["outputs"]
        _assert_close(actual[key], expected, call.rtol, call.atol, err_msg=f"{call.signature}/{key}")
