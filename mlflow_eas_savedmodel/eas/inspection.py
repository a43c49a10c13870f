"""``inspect``: a model's SignatureDefs, TF version and EAS processors from the MLmodel alone.

Like ``saved_model_cli show --all``, but it reads only the flavor metadata recorded at save
time, so it neither loads TensorFlow nor downloads the SavedModel.
"""

from mlflow_eas_savedmodel.eas.mlmodel import load_flavor_metadata


def describe_model(model_uri):
    """A plain-data description of ``model_uri`` (what ``inspect --json`` prints).

    Example:
        >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
        >>> image = keras.Input((4,), name="image")
        >>> keras_model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
        >>> mes.save_model(keras_model, "model", input_example=np.ones((2, 4), "float32"))
        >>> from mlflow_eas_savedmodel.eas.inspection import describe_model
        >>> describe_model("model")["signature_defs"]["serving_default"]["inputs"]
        {'image': {'dtype': 'float32', 'name': 'image:0', 'shape': [-1, 4]}}
    """
    _, conf = load_flavor_metadata(model_uri)
    return {
        "model_uri": model_uri,
        "tensorflow_version": conf.tensorflow_version,
        "source": conf.source,
        "tags": conf.tags,
        "default_signature": conf.default_signature,
        "eas_processors": list(conf.eas_processors),
        "eas_incompatibilities": dict(conf.eas_incompatibilities),
        "signature_defs": conf.signature_defs,
    }


def _shape_text(shape):
    if shape is None:
        return "unknown rank"
    return "(" + ", ".join("None" if d == -1 else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def format_description(description):
    """The human-readable table ``inspect`` prints."""
    lines = [
        f"Model: {description['model_uri']}",
        f"Saved with TensorFlow {description['tensorflow_version']} "
        f"(source: {description['source']}, tags: {', '.join(description['tags']) or '-'})",
        "Compatible EAS processors: " + (", ".join(description["eas_processors"]) or "none"),
    ]
    for version, reasons in sorted(description["eas_incompatibilities"].items()):
        lines.append(f"  not TF {version}: " + "; ".join(reasons))
    default = description["default_signature"]
    for name, sig in description["signature_defs"].items():
        rows = [("", "key", "dtype", "shape", "tensor")]
        for kind in ("inputs", "outputs"):
            for key, t in sig[kind].items():
                rows.append((kind[:-1], key, t["dtype"], _shape_text(t["shape"]), t["name"]))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines.append("")
        lines.append(
            f"SignatureDef {name!r}" + (" (default)" if name == default else "")
            + f"  method: {sig['method_name']}"
        )
        for row in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)
