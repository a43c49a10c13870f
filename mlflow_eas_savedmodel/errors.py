"""The one exception users see: ``MlflowException`` with ``INVALID_PARAMETER_VALUE``.

Every message names the problem and the fix, so that it can be acted on without the docs.
"""

from mlflow.exceptions import MlflowException


def invalid_parameter_value(message):
    """An ``MlflowException`` for a problem the caller caused (raise it).

    MLflow's own ``MlflowException.invalid_parameter_value``, under the name every module imports.
    """
    return MlflowException.invalid_parameter_value(message)


# What each stage of the converter does, and what the user can do when it fails there.
# ``{runtimes}`` becomes "1.12-2.7" (runtimes.table.version_span) when a message is made: the
# table is imported then, since runtimes.processors imports this module.
STAGES = {
    "trace": (
        "reading the model and tracing its functions",
        "Check that the model runs in this TensorFlow on inputs of its signature (call it once "
        "on an example, or pass `input_example=`), and that a SavedModel folder is complete.",
    ),
    "freeze": (
        "freezing the graph into constants",
        "The graph holds something TensorFlow cannot freeze (a resource that is neither a "
        "variable nor a lookup table, or a variable created inside the serving function): "
        "serve a function that reads only variables and tables created outside it.",
    ),
    "rewrite": (
        "rewriting the frozen graph for TF {runtimes} and checking it against their op registries",
        "This is a conversion bug: report it with the model.",
    ),
    "write": (
        "writing saved_model.pb and variables/",
        "Check that the target disk has room for the model and that its folder is writable, "
        "or save the model to another disk.",
    ),
    "verify": (
        "loading and running the saved model in TensorFlow's TF1 loader",
        "Save with verify='static' to skip the run (the claim is then not checked), and "
        "report it with the model.",
    ),
}


def describe_signatures(signatures):
    """``SignatureDef 'a'`` / ``SignatureDefs 'a', 'b'`` / ``the model's SignatureDefs``."""
    names = sorted(signatures or ())
    if not names:
        return "the model's SignatureDefs"
    return ("SignatureDef " if len(names) == 1 else "SignatureDefs ") + ", ".join(repr(n) for n in names)


_NOISE = ("Graph execution error:", "Detected at node", "Original stack trace for", "File \"", "Traceback")


def error_text(error, limit=600):
    """The lines of a (TensorFlow) error that say what went wrong, without its stack traces.

    A graph execution error starts with "Graph execution error:" and "Detected at node ..."
    lines and ends with Python stack traces; the reason is in between.
    """
    text = str(getattr(error, "message", None) or error).strip()
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Original stack trace for"):
            break
        if line and not line.startswith(_NOISE) and not line.startswith("[[{{node"):
            lines.append(line)
    return "; ".join(lines[:3])[:limit].rstrip(".")


def stage_failed(stage, signatures, error):
    """The ``MlflowException`` for ``error`` (any exception) raised in a converter ``stage``."""
    from mlflow_eas_savedmodel.runtimes.table import version_span

    what, fix = STAGES[stage]
    what = what.replace("{runtimes}", version_span())
    detail = error_text(error) or "(no message)"
    return invalid_parameter_value(
        f"The conversion failed at its {stage} stage ({what}) for {describe_signatures(signatures)}: "
        f"{type(error).__name__}: {detail}. {fix} Nothing was saved."
    )


class pipeline_stage:  # noqa: N801 - used as a context manager, like contextlib's
    """``with pipeline_stage("freeze", ["serving_default"]):`` turns any exception but an
    ``MlflowException`` (already a message for the user) into :func:`stage_failed`'s.

    ``signatures`` may be a callable ``error -> names`` when the failing node tells which
    SignatureDefs are concerned.
    """

    def __init__(self, stage, signatures=None):
        if stage not in STAGES:
            raise ValueError(f"unknown converter stage {stage!r}")
        self.stage, self.signatures = stage, signatures

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or not isinstance(error, Exception) or isinstance(error, MlflowException):
            return False
        names = self.signatures(error) if callable(self.signatures) else self.signatures
        raise stage_failed(self.stage, names, error) from error
