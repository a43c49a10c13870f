"""The ``eas_savedmodel`` entry of a model's MLmodel file, owned by :class:`FlavorConf`.

Every module that reads or writes the flavor's configuration goes through this one: the export
returns one (:func:`.export.export`), the save completes it (:meth:`FlavorConf.from_export`) and
writes it (:meth:`FlavorConf.to_dict`, what ``Model.add_flavor`` gets), every reader (the load
path, ``inspect``, the EAS commands, promotion, the registry tags) reads and validates it
(:meth:`FlavorConf.read`), and every consumer of the SavedModel checks its files against the
recorded SHA-256 through :meth:`FlavorConf.verify_files`. The field names are the MLmodel keys.
Promotion compares two entries' SignatureDefs (:func:`.registry.signature_changes`).

It imports neither MLflow's pyfunc nor TensorFlow, so plain-metadata readers stay light.
"""

import dataclasses
import os

from mlflow_eas_savedmodel import integrity
from mlflow_eas_savedmodel.errors import invalid_parameter_value

FLAVOR_NAME = "eas_savedmodel"
SAVED_MODEL_DIR = "savedmodel"
CUSTOM_OBJECTS_FILE = "custom_objects.cloudpickle"  # the only file this flavor ever pickles
# Keys written only when they apply, so models without them keep today's MLmodel bytes.
_WRITTEN_WHEN_SET = {
    "allow_file_ops": False, "allow_ops": None, "custom_objects": None, "custom_objects_sha256": None,
}
# Keys a reader checks the type of: (type, required). The others are shown, never computed on.
_CHECKED = {
    "saved_model_dir": (str, True),
    "signature_defs": (dict, True),
    "default_signature": (str, True),
    "file_sha256": (dict, False),
    "eas_processors": (list, False),
    "custom_objects": (str, False),
    "custom_objects_sha256": (str, False),
    "allow_file_ops": (bool, False),
    "allow_ops": (list, False),
}


def not_this_flavor(where, flavors):
    """The one error for a model another flavor saved; ``where`` names the model for the user."""
    return invalid_parameter_value(
        f"The model at {where!r} was not saved by mlflow_eas_savedmodel (its flavors: "
        f"{sorted(flavors) or 'none'}). Load it with the flavor that saved it (e.g. "
        "mlflow.pyfunc.load_model), or log it with mlflow_eas_savedmodel.log_model first."
    )


@dataclasses.dataclass(kw_only=True)
class FlavorConf:
    """The flavor's MLmodel entry; fields in the order the save writes them.

    Attributes:
        saved_model_dir: the SavedModel folder's name inside the model.
        source: the kind of model converted (``keras``, ``session``...).
        tags: the MetaGraphDef's tags (``["serve"]``).
        default_signature: the SignatureDef used when a request names none.
        signature_defs: every SignatureDef's metadata (see :mod:`.metadata`).
        tensorflow_version: the TensorFlow that exported the SavedModel.
        eas_processors: the compatible EAS processor codes.
        eas_incompatibilities: ``{TF version: reasons}`` for the runtimes that cannot run it.
        conversion_notes: what the conversion changed.
        verification: what the post-save verification ran (see :mod:`.verify`).
        file_sha256: ``{relative path: hex SHA-256}`` of the SavedModel folder.
        allow_file_ops: the owner kept file ops at save (written only when true).
        allow_ops: the ops off the allowlist the owner kept at save (written only when set).
        custom_objects: :data:`CUSTOM_OBJECTS_FILE` when custom objects were stored.
        custom_objects_sha256: that file's SHA-256, checked before it is unpickled.
    """

    saved_model_dir: str = SAVED_MODEL_DIR
    source: str | None = None
    tags: list = dataclasses.field(default_factory=list)
    default_signature: str
    signature_defs: dict
    tensorflow_version: str | None = None
    eas_processors: list = dataclasses.field(default_factory=list)
    eas_incompatibilities: dict = dataclasses.field(default_factory=dict)
    conversion_notes: list = dataclasses.field(default_factory=list)
    verification: dict | None = None
    file_sha256: dict | None = None
    allow_file_ops: bool = False
    allow_ops: list | None = None
    custom_objects: str | None = None
    custom_objects_sha256: str | None = None

    @classmethod
    def read(cls, model, where):
        """The flavor's entry of ``model`` (an ``mlflow.models.Model`` or its ``flavors`` dict).

        Args:
            model: a ``Model``, or ``{flavor name: conf}`` as ``Model.flavors`` holds it.
            where: the model as the user named it (path or URI), for the messages.

        Raises:
            MlflowException: the model has no ``eas_savedmodel`` flavor (:func:`not_this_flavor`),
                or the entry is damaged (naming the key).
        """
        flavors = getattr(model, "flavors", model) or {}
        if FLAVOR_NAME not in flavors:
            raise not_this_flavor(where, flavors)
        conf = flavors[FLAVOR_NAME]
        _validate(conf, where)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in conf.items() if k in names})

    @classmethod
    def from_export(cls, exported, custom_objects=None):
        """The MLmodel entry of a save: what :func:`.export.export` returned, plus its custom objects.

        Args:
            exported: the :class:`FlavorConf` the export (and ``verify="runtimes"``) returned.
            custom_objects: ``{"custom_objects": ..., "custom_objects_sha256": ...}`` when the
                save stored custom objects, else ``None``.
        """
        return dataclasses.replace(exported, **(custom_objects or {}))

    def to_dict(self):
        """The keys and values ``Model.add_flavor`` records (optional keys only when set)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _WRITTEN_WHEN_SET or getattr(self, f.name) != _WRITTEN_WHEN_SET[f.name]
        }

    def saved_model_path(self, model_path):
        """The SavedModel folder inside the model folder ``model_path``."""
        return os.path.join(model_path, self.saved_model_dir)

    def verify_files(self, saved_model_dir, unrecorded):
        """Checks ``saved_model_dir`` against :attr:`file_sha256` (see :func:`.integrity.verify`).

        Args:
            saved_model_dir: the SavedModel folder to check.
            unrecorded: the message when the MLmodel records no hashes: what could not be checked
                and what to do depends on the caller (load, upload, promotion).

        Raises:
            MlflowException: no hashes recorded, or a file missing, extra or changed.
        """
        if self.file_sha256 is None:
            raise invalid_parameter_value(unrecorded)
        integrity.verify(saved_model_dir, self.file_sha256)


def _validate(conf, where):
    """Checks every key this package reads has the type it writes.

    A damaged or hand-edited MLmodel file (a key removed, a list where a mapping belongs, a
    ``saved_model_dir`` or ``custom_objects`` pointing elsewhere) fails here with the key's name
    instead of a ``KeyError``/``TypeError`` deep inside a load.
    """
    def damaged(problem):
        return invalid_parameter_value(
            f"The MLmodel file of {where!r} is damaged: {problem}. Download or copy the model "
            "again, or re-log it with mlflow_eas_savedmodel.log_model."
        )

    if not isinstance(conf, dict):
        raise damaged(f"the {FLAVOR_NAME!r} flavor is a {type(conf).__name__}, not a mapping")
    for key, (kind, required) in _CHECKED.items():
        if key not in conf:
            if required:
                raise damaged(f"the key {FLAVOR_NAME}.{key} is missing")
            continue
        if not isinstance(conf[key], kind):
            raise damaged(
                f"{FLAVOR_NAME}.{key} is a {type(conf[key]).__name__}, not a {kind.__name__}"
            )
    directory = conf["saved_model_dir"]
    if not directory or os.path.isabs(directory) or any(c in directory for c in "/\\") or directory == "..":
        raise damaged(f"{FLAVOR_NAME}.saved_model_dir {directory!r} is not a folder name inside the model")
    if "custom_objects" in conf and conf["custom_objects"] != CUSTOM_OBJECTS_FILE:
        raise damaged(
            f"{FLAVOR_NAME}.custom_objects is {conf['custom_objects']!r}; this package only ever "
            f"writes {CUSTOM_OBJECTS_FILE!r}"
        )
    signatures = conf["signature_defs"]
    if conf["default_signature"] not in signatures:
        raise damaged(
            f"{FLAVOR_NAME}.default_signature {conf['default_signature']!r} is not one of "
            f"{FLAVOR_NAME}.signature_defs {sorted(map(str, signatures))}"
        )
    for name, signature in signatures.items():
        for side in ("inputs", "outputs"):
            tensors = signature.get(side) if isinstance(signature, dict) else None
            if not isinstance(tensors, dict) or not all(
                isinstance(t, dict) and isinstance(t.get("dtype"), str) and "shape" in t
                for t in tensors.values()
            ):
                raise damaged(
                    f"{FLAVOR_NAME}.signature_defs.{name}.{side} is not a mapping of tensors "
                    "(dtype, shape, name)"
                )
