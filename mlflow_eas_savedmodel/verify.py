"""Post-save verification: the flavor runs what it wrote before it claims anything about it.

:func:`verify_saved_model` is called by ``save_model`` on the new SavedModel folder while it is
still in the temporary folder, so a failure leaves nothing on disk. Two stages:

* **static** (always, reads only ``saved_model.pb`` and ``variables/variables.index``): every
  variable of the graph is restored by the Saver from a tensor of the ``variables/`` bundle with
  the variable's own shape and dtype (a mismatch is what makes every loader, 1.12 to 2.21, refuse
  the artifact with ``Assign requires shapes of both tensors to match``), and every SignatureDef
  tensor names a node of the graph;
* **run** (default; ``verify="static"`` or ``verify=False`` skip it): the SavedModel is loaded
  with TensorFlow 2.21's TF1 loader (``tf.compat.v1.saved_model.loader.load``, the loader EAS's
  Python path uses) in a fresh graph, and every SignatureDef runs on the input example when it
  covers the SignatureDef's inputs, else on synthesised inputs (serialized ``tf.Example``\\s for
  parse-op inputs, see :mod:`.eas.inputs`). The outputs are compared (:mod:`.comparison`) with
  the source's own (:attr:`ServingGraph.reference`, see :mod:`.graph.reference`).

Running loads the weights once more (1x their size), which would break the memory bound of
very large exports: above :data:`DEFAULT_MAX_RUN_BYTES` of variables (``$MLFLOW_EAS_SAVEDMODEL_
VERIFY_MAX_BYTES`` overrides it) only the static stage runs, and the MLmodel says so.

What ran is recorded in the MLmodel (``verification``): the check never claims more than it did.
"""

import logging
import os

from mlflow_eas_savedmodel._tensorflow import import_tensorflow
from mlflow_eas_savedmodel.comparison import ATOL, RTOL, compare
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.graph.layout import VARIABLES_DIR, variables_prefix
from mlflow_eas_savedmodel.graph.op_facts import VARIABLE_OPS
from mlflow_eas_savedmodel.graph.serving_graph import SERVING_TAG, node_name

DEFAULT_MAX_RUN_BYTES = 1024**3
MAX_BYTES_ENV = "MLFLOW_EAS_SAVEDMODEL_VERIFY_MAX_BYTES"
MODES = (True, False, "static", "runtimes")  # "runtimes": True, then .verify_runtimes
_ASSIGN_OPS = ("Assign", "AssignVariableOp")

_logger = logging.getLogger(__name__)


def check_mode(verify):
    """Validates the ``verify=`` argument of ``save_model``."""
    if verify not in MODES or isinstance(verify, int) and not isinstance(verify, bool):
        raise invalid_parameter_value(
            f"verify={verify!r} is not valid. Use True (check and run the saved model, the "
            "default), 'runtimes' (also run it in the real runtime of every claimed EAS "
            "processor), 'static' (check variables and SignatureDefs without running) or False."
        )


def max_run_bytes():
    value = os.environ.get(MAX_BYTES_ENV)
    if not value:
        return DEFAULT_MAX_RUN_BYTES
    try:
        return int(value)
    except ValueError:
        raise invalid_parameter_value(
            f"${MAX_BYTES_ENV}={value!r} is not a number of bytes, e.g. 2147483648."
        ) from None


def variables_bytes(export_dir):
    var_dir = os.path.join(export_dir, VARIABLES_DIR)
    if not os.path.isdir(var_dir):
        return 0
    return sum(os.path.getsize(os.path.join(var_dir, f)) for f in os.listdir(var_dir) if ".data-" in f)


# --------------------------------------------------------------------------- static


def _restored_from(graph_def):
    """``{variable node: checkpoint key}`` read off the Saver's ``RestoreV2`` -> ``Assign`` nodes."""
    from tensorflow.python.framework import tensor_util

    by_name = {n.name: n for n in graph_def.node}
    keys = {}
    for node in graph_def.node:
        if node.op != "RestoreV2":
            continue
        names = by_name.get(node_name(node.input[1]))
        if names is not None and names.op == "Const":
            keys[node.name] = [
                v.decode() for v in tensor_util.MakeNdarray(names.attr["value"].tensor).reshape(-1)
            ]
    restored = {}
    for node in graph_def.node:
        if node.op not in _ASSIGN_OPS or len(node.input) < 2:
            continue
        source, _, port = node.input[1].partition(":")
        if source in keys:
            restored[node_name(node.input[0])] = keys[source][int(port or 0)]
    return restored


def check_static(export_dir, meta_graph_def):
    """Raises unless every variable matches its bundle tensor and every SignatureDef tensor exists."""
    tf = import_tensorflow()
    graph_def = meta_graph_def.graph_def
    variables = {n.name: n for n in graph_def.node if n.op in VARIABLE_OPS}
    if variables:
        prefix = variables_prefix(export_dir)
        try:
            reader = tf.train.load_checkpoint(prefix)
        except (tf.errors.OpError, ValueError) as e:
            raise invalid_parameter_value(
                f"The saved model's variables/ bundle cannot be read ({e}); the export is broken. "
                "Nothing was saved; report this with the model."
            ) from e
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
        restored = _restored_from(graph_def)
        problems = []
        for name, node in sorted(variables.items()):
            key = restored.get(name)
            if key is None or key not in shapes:
                problems.append(f"variable {name!r} is not restored from variables/ (key {key!r})")
                continue
            shape = [d.size for d in node.attr["shape"].shape.dim]
            dtype = tf.as_dtype(node.attr["dtype"].type).base_dtype
            if list(shapes[key]) != shape or dtypes[key].base_dtype != dtype:
                problems.append(
                    f"variable {name!r} is {dtype.name}{shape} in the graph but {key!r} in "
                    f"variables/ is {dtypes[key].name}{list(shapes[key])}"
                )
        if problems:
            raise invalid_parameter_value(
                "The saved model would not load: its variables do not match variables/ (every "
                "loader refuses such an artifact):\n  " + "\n  ".join(problems[:10])
                + "\nNothing was saved; this is a conversion bug, report it with the model."
            )
    nodes = {n.name for n in graph_def.node}
    for name, signature in meta_graph_def.signature_def.items():
        for kind, infos in (("input", signature.inputs), ("output", signature.outputs)):
            for key, info in infos.items():
                if node_name(info.name) not in nodes:
                    raise invalid_parameter_value(
                        f"SignatureDef {name!r}: {kind} {key!r} names {info.name!r}, which is not "
                        "in the saved graph. Nothing was saved; report this with the model."
                    )


# --------------------------------------------------------------------------- run


def run_saved_model(export_dir, feeds):
    """Loads ``export_dir`` with TF 2.21's TF1 loader in a fresh graph; ``{sig: {key: array}}``.

    Returns ``({signature: outputs}, {signature: error text})``; a load failure raises.
    """
    tf = import_tensorflow()
    from tensorflow.python.util import deprecation

    graph = tf.Graph()
    outputs, errors = {}, {}
    config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
    with graph.as_default(), tf.compat.v1.Session(graph=graph, config=config) as sess:
        try:
            with deprecation.silence():  # the TF1 loader's warning is not the user's concern
                meta = tf.compat.v1.saved_model.loader.load(sess, [SERVING_TAG], export_dir)
        except Exception as e:  # noqa: BLE001 - the loader raises many types
            raise invalid_parameter_value(
                f"The saved model does not load in TensorFlow {tf.__version__}'s TF1 loader: "
                f"{_first_line(e)}. Nothing was saved; report this with the model."
            ) from e
        for name, feed in feeds.items():
            signature = meta.signature_def[name]
            keys = sorted(signature.outputs)
            try:
                values = sess.run(
                    [signature.outputs[k].name for k in keys],
                    {signature.inputs[k].name: v for k, v in feed.items()},
                )
            except Exception as e:  # noqa: BLE001 - reported per signature
                errors[name] = _first_line(e)
                continue
            outputs[name] = dict(zip(keys, values))
    return outputs, errors


def _first_line(error):
    from mlflow_eas_savedmodel.errors import error_text

    # Not "Graph execution error:" alone: the reason TensorFlow gives is on a later line.
    return error_text(error, limit=500) or type(error).__name__


def _source_answers(reference, feeds):
    """``({signature: outputs}, {signature: why the source failed})`` of ``reference`` on ``feeds``."""
    expected, reference_errors = {}, {}
    if reference is not None:
        try:
            for name, feed in feeds.items():
                try:
                    expected[name] = reference(name, feed)
                except Exception as e:  # noqa: BLE001 - compared with the artifact's behaviour
                    reference_errors[name] = _first_line(e)
        finally:
            getattr(reference, "close", lambda: None)()
    return expected, reference_errors


def _artifact_failed(name, origin, covered, errors, expected, reference_errors):
    """The result of a SignatureDef the artifact could not run; raises unless the source fails too."""
    if name in reference_errors and not covered:
        # The source fails on these inputs too (e.g. ids out of a vocabulary's range).
        return {"inputs": origin, "result": "not compared: the source fails on synthesised inputs too"}
    raise invalid_parameter_value(
        f"Verification failed: SignatureDef {name!r} of the saved model does not run on "
        f"the {origin} inputs in TensorFlow 2.21 ({errors[name]})"
        + ("" if name not in expected else ", but the source model does")
        + ". Nothing was saved; this is a conversion bug, report it with the model."
    )


def _compared(name, origin, expected, actual, rtol, atol):
    """The result of one SignatureDef compared with the source; raises on any difference."""
    worst, problems = 0.0, []
    for key, value in expected.items():
        diff, found = compare(
            value, actual.get(key), f"output {key!r}", rtol=rtol, atol=atol, reference="the source model"
        )
        problems.extend(found)
        worst = max(worst, diff or 0.0)
    if problems:
        raise invalid_parameter_value(
            f"Verification failed: SignatureDef {name!r} of the saved model answers differently "
            f"from the source model on the {origin} inputs: " + "; ".join(problems)
            + ". Nothing was saved. If the model is random by design (random ops on the "
            "serving path), save it with verify='static'; otherwise this is a conversion "
            "bug: report it with the model."
        )
    return {"inputs": origin, "result": "matches the source", "max_abs_diff": worst}


def verify_saved_model(
    export_dir, meta_graph_def, reference=None, example=None, mode=True, rtol=RTOL, atol=ATOL
):
    """Checks (and by default runs) the SavedModel just written; returns what ran, for MLmodel.

    Args:
        export_dir: the new SavedModel folder.
        meta_graph_def: its serving ``MetaGraphDef``.
        reference: ``(signature, feeds) -> outputs`` computed by the source, or ``None``.
        example: the input example (``{key: array}`` or one array) or ``None``.
        mode: ``True`` (static + run), ``"static"`` or ``False`` (nothing).
        rtol, atol: see :func:`~mlflow_eas_savedmodel.comparison.compare`.

    Raises:
        MlflowException: naming the SignatureDef and the difference.
    """
    if mode is False:
        return {"static": "skipped (verify=False)", "run": "skipped (verify=False)"}
    check_static(export_dir, meta_graph_def)
    summary = {"static": "ok"}
    size = variables_bytes(export_dir)
    limit = max_run_bytes()
    if mode == "static":
        summary["run"] = "skipped (verify='static')"
        return summary
    if size > limit:
        summary["run"] = (
            f"skipped: variables are {size} bytes, above the {limit} bytes the run may load "
            f"(${MAX_BYTES_ENV})"
        )
        _logger.info("Verification: %s", summary["run"])
        return summary
    from mlflow_eas_savedmodel import metadata
    from mlflow_eas_savedmodel.eas.inputs import inputs_per_signature
    from mlflow_eas_savedmodel.graph.example_spec import signature_example_specs

    signature_defs = metadata.describe_signature_defs(meta_graph_def)
    feeds, covered = inputs_per_signature(
        signature_defs, example, example_specs=signature_example_specs(meta_graph_def)
    )
    expected, reference_errors = _source_answers(reference, feeds)
    actual, errors = run_saved_model(export_dir, feeds)
    results = {}
    for name in sorted(feeds):
        origin = "input example" if covered[name] else "synthesised"
        if name in errors:
            results[name] = _artifact_failed(name, origin, covered[name], errors, expected, reference_errors)
        elif name not in expected:
            results[name] = {
                "inputs": origin,
                "result": "ran; no reference"
                + (f" (the source failed: {reference_errors[name]})" if name in reference_errors else ""),
            }
        else:
            results[name] = _compared(name, origin, expected[name], actual[name], rtol, atol)
    summary["run"] = {"tensorflow": import_tensorflow().__version__, "signatures": results}
    return summary
