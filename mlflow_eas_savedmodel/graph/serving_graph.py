"""The one in-memory form every source is converted to before export.

A :class:`ServingGraph` is a *frozen* TF1 ``GraphDef``: inputs are ``Placeholder`` nodes, weights
are stand-in ``Const`` nodes (shape and dtype, no values: see :mod:`.weights`), control flow is
lowered to v1 ops (``Switch``/``Merge``/``Enter``...) and the function library is inlined. That
form is version-neutral, which is what old EAS runtimes need; :mod:`mlflow_eas_savedmodel.export`
then turns the weight constants into reference variables (``VariableV2``) restored from
``variables/``, whose values it reads from ``weight_values``.

Sources (Keras, session, checkpoint, SavedModel folder) only ever produce this object; nothing
after export knows which source a model came from.
"""

import dataclasses
import re

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
METHOD_ALIASES = {"predict": PREDICT_METHOD, "classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD}

DEFAULT_SIGNATURE_NAME = "serving_default"
SERVING_TAG = "serve"


@dataclasses.dataclass
class SignatureSpec:
    """One SignatureDef of the serving graph: keys mapped to tensor names (``"node:0"``)."""

    inputs: dict
    outputs: dict
    method_name: str = PREDICT_METHOD


@dataclasses.dataclass
class ServingGraph:
    """A frozen serving graph plus everything the SavedModel needs besides the nodes.

    Attributes:
        graph_def: frozen ``GraphDef`` (weights as ``Const``, no function calls).
        signatures: SignatureDef name -> :class:`SignatureSpec`.
        default_signature: name of the signature requests use when they name none.
        weights: ``Const`` node name -> checkpoint variable name it is restored as. Several
            constants may share one variable name (signatures frozen separately share weights).
        weight_values: variable name -> :class:`~.weights.WeightValue`: where each variable's
            value is read from when the export writes ``variables/``.
        init_ops: node names to run once at load (table initializers), in order.
        source: the source kind, recorded in the MLmodel metadata only.
        notes: human-readable notes on what the conversion changed, recorded in the metadata.
        reference: ``(signature name, {input key: array}) -> {output key: array}`` computed by
            the source itself (see :mod:`.reference`), or ``None``; the post-save
            check (:mod:`..verify`) compares the artifact's answers with it.
    """

    graph_def: object
    signatures: dict
    default_signature: str = DEFAULT_SIGNATURE_NAME
    weights: dict = dataclasses.field(default_factory=dict)
    weight_values: dict = dataclasses.field(default_factory=dict)
    init_ops: list = dataclasses.field(default_factory=list)
    source: str = "unknown"
    notes: list = dataclasses.field(default_factory=list)
    reference: object = None


def node_name(tensor_name):
    """``"scope/x:0"`` -> ``"scope/x"``; ``"^x"`` -> ``"x"``."""
    return tensor_name.lstrip("^").split(":")[0]


def sanitize_node_name(key):
    """A TensorFlow node name derived from a user's signature key (keys may hold any text)."""
    name = re.sub(r"[^A-Za-z0-9_.\-/]", "_", key).strip("/")
    if not name or not re.match(r"[A-Za-z0-9.]", name[0]):
        name = "t_" + name
    return name
