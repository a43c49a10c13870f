"""Promotion: move a registered model's alias (e.g. ``champion``) to a checked version.

:func:`promote` moves the alias only after checking that the version is what a server of the
alias will load without surprise:

1. the artifact was saved by this flavor (``eas_savedmodel`` in its MLmodel file);
2. the registered version is ``READY`` and its SavedModel folder has the layout EAS's TensorFlow
   processors accept (:func:`mlflow_eas_savedmodel.export.check_layout`), and every file matches
   the SHA-256 recorded at save time (:func:`mlflow_eas_savedmodel.integrity.verify`; a model
   without recorded hashes is refused);
3. its SignatureDefs match those of the version that holds the alias now: the same signature
   names, methods, input/output keys, dtypes and shapes, and the same default signature (a
   holder of another flavor counts as a difference). Clients
   of the alias send requests shaped for the current holder; any difference would break them,
   so it is refused unless ``force=True``;
4. with ``require_checks``, the version passed ``check-runtime`` on each of those EAS processors
   (its ``eas.check.<processor>`` tags, :mod:`.registry_tags`).

A promoted version registered without the flavor gets the ``eas.processors`` and
``eas.tf_version`` tags then.

The alias holder is read again right before the move and right after it: a promotion that
raced with another one fails instead of replacing a holder it never compared against.

Only aliases are used (``MlflowClient.set_registered_model_alias``): stages are deprecated.
The ``promote`` command of the ``mlflow-eas-savedmodel`` CLI wraps the function.
"""

import dataclasses
import tempfile

import click
from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

from mlflow_eas_savedmodel import registry_tags as _tags
from mlflow_eas_savedmodel.artifact import download, open_model
from mlflow_eas_savedmodel.cli_errors import user_errors
from mlflow_eas_savedmodel.cli_options import store_options
from mlflow_eas_savedmodel.flavor_conf import FLAVOR_NAME
from mlflow_eas_savedmodel.errors import invalid_parameter_value

DEFAULT_ALIAS = "champion"


@dataclasses.dataclass(frozen=True)
class SignatureDifference:
    """One way a candidate's SignatureDefs differ from the alias holder's.

    Attributes:
        signature: the SignatureDef name (``None`` for model-wide differences).
        what: e.g. ``"signature added"``, ``"input removed"``, ``"input dtype"``,
            ``"output shape"``, ``"method"``, ``"default signature"``.
        key: the input/output key concerned, if any.
        before: the alias holder's value (``None`` when added).
        after: the candidate's value (``None`` when removed).
    """

    signature: str | None
    what: str
    key: str | None = None
    before: object = None
    after: object = None

    def __str__(self):
        where = f"signature {self.signature!r}" if self.signature is not None else "model"
        if self.what in ("signature added", "signature removed"):
            return f"{where}: {self.what}"
        subject = f"{self.what} {self.key!r}" if self.key is not None else self.what
        if self.before is None:
            change = f"({_show(self.after)})"
        elif self.after is None:
            change = f"(was {_show(self.before)})"
        else:
            change = f"{_show(self.before)} -> {_show(self.after)}"
        return f"{where}: {subject} {change}"


def _show(value):
    if isinstance(value, dict):  # a tensor: dtype and shape, as a user reads them
        return f"{value['dtype']}{_shape(value['shape'])}"
    return str(value)


def _shape(shape):
    if shape is None:
        return "[unknown rank]"
    return "[" + ", ".join("None" if d == -1 else str(d) for d in shape) + "]"


@dataclasses.dataclass(frozen=True)
class PromotionResult:
    """What :func:`promote` did.

    Attributes:
        model_name: the registered model.
        version: the version that now holds the alias.
        alias: the alias moved.
        previous_version: the version that held it before (``None`` if none did).
        differences: how the SignatureDefs differ from the previous holder's (non-empty only
            when ``force=True`` let the promotion through).
        forced: whether ``force=True`` was needed.
    """

    model_name: str
    version: str
    alias: str
    previous_version: str | None
    differences: tuple = ()
    forced: bool = False


class PromotionRefused(MlflowException):
    """Raised by :func:`promote` when the SignatureDefs differ and ``force`` is not set.

    Attributes:
        differences: the :class:`SignatureDifference` list, for display or inspection.
    """

    def __init__(self, message, differences):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)
        self.differences = tuple(differences)


def promote(model_name, version, alias=DEFAULT_ALIAS, force=False, client=None, require_checks=()):
    """Moves ``alias`` of ``model_name`` to ``version`` after checking the artifact.

    Args:
        model_name: the registered model's name.
        version: the version to promote (``int`` or ``str``).
        alias: the alias to move (default ``"champion"``).
        force: promote even if the SignatureDefs differ from the current alias holder's.
            Flavor, layout and integrity problems are never forced through.
        client: an ``mlflow.MlflowClient`` (default: one for the current tracking and registry
            URIs, e.g. ``$MLFLOW_TRACKING_URI``).
        require_checks: EAS processor codes the version must have passed ``check-runtime`` on
            (a ``passed`` ``eas.check.<processor>`` tag each, see :mod:`.registry_tags`);
            never forced through.

    Returns:
        A :class:`PromotionResult`.

    Raises:
        PromotionRefused: the SignatureDefs differ from the alias holder's (``.differences``).
        MlflowException: the version does not exist, is not ready, was not saved by this flavor,
            or its SavedModel folder is invalid or does not match its recorded SHA-256s.

    Example:
        >>> import keras, mlflow, mlflow_eas_savedmodel as mes
        >>> from mlflow_eas_savedmodel.registry import promote
        >>> mlflow.set_tracking_uri("sqlite:///mlflow.db")
        >>> image = keras.Input((4,), name="image")
        >>> keras_model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
        >>> with mlflow.start_run():
        ...     for _ in range(2):
        ...         info = mes.log_model(keras_model, name="model", registered_model_name="mnist")
        >>> print(promote("mnist", 1).previous_version)
        None
        >>> result = promote("mnist", 2, alias="champion")
        >>> result.previous_version, result.version
        ('1', '2')
    """
    from mlflow import MlflowClient

    client = client or MlflowClient()
    version = str(version)
    model_version = client.get_model_version(model_name, version)
    if model_version.status != "READY":
        raise invalid_parameter_value(
            f"Version {version} of {model_name!r} is {model_version.status}, not READY: its "
            "registration has not finished. Wait for it, then promote again."
        )
    candidate = _checked_flavor_conf(client, model_name, version)
    _tags.require_passing_checks(client, model_name, version, require_checks)
    if _tags.PROCESSORS_TAG not in (model_version.tags or {}):  # registered without the flavor
        _tags.tag_registered_version(client, model_name, version, candidate)
    previous = _alias_holder(client, model_name, alias)

    differences = ()
    if previous is not None and previous != version:
        differences = tuple(_diff_with_holder(client, model_name, previous, candidate))
        if differences and not force:
            listed = "\n".join(f"  - {d}" for d in differences)
            raise PromotionRefused(
                f"Refusing to move @{alias} of {model_name!r} from version {previous} to version "
                f"{version}: their SignatureDefs differ, so clients of @{alias} would break:\n"
                f"{listed}\nUpdate the clients, then promote with force=True "
                "(CLI: --force), or promote a version with the same SignatureDefs.",
                differences,
            )
    # Check, then move is a race: another promotion may have moved the alias while this one
    # downloaded and compared. MLflow has no compare-and-set for aliases, so the holder is read
    # again right before the move (the window left is one request) and once after it.
    _refuse_if_moved(client, model_name, alias, version, previous, "while this promotion checked it")
    client.set_registered_model_alias(model_name, alias, version)
    _refuse_if_moved(client, model_name, alias, version, version, "right after this promotion moved it")
    return PromotionResult(
        model_name=model_name,
        version=version,
        alias=alias,
        previous_version=previous,
        differences=differences,
        forced=bool(differences),
    )


def signature_changes(before, after):
    """The differences between two models' SignatureDefs.

    Args:
        before: the alias holder's :class:`~.flavor_conf.FlavorConf`.
        after: the candidate's.

    Returns:
        A list of :class:`SignatureDifference`, empty when a client of ``before`` can call
        ``after`` unchanged. Tensor names inside the graph are not compared: clients never
        see them.
    """
    old, new = before.signature_defs, after.signature_defs
    differences = []
    if before.default_signature != after.default_signature:
        differences.append(
            SignatureDifference(
                None, "default signature", None, before.default_signature, after.default_signature
            )
        )
    for name in sorted(old.keys() - new.keys()):
        differences.append(SignatureDifference(name, "signature removed", before=old[name]))
    for name in sorted(new.keys() - old.keys()):
        differences.append(SignatureDifference(name, "signature added", after=new[name]))
    for name in sorted(old.keys() & new.keys()):
        o, n = old[name], new[name]
        if o.get("method_name") != n.get("method_name"):
            differences.append(
                SignatureDifference(name, "method", None, o.get("method_name"), n.get("method_name"))
            )
        for side in ("inputs", "outputs"):
            differences.extend(_diff_tensors(name, side[:-1], o[side], n[side]))
    return differences


def _diff_tensors(signature, kind, old, new):
    for key in sorted(old.keys() - new.keys()):
        yield SignatureDifference(signature, f"{kind} removed", key, before=old[key])
    for key in sorted(new.keys() - old.keys()):
        yield SignatureDifference(signature, f"{kind} added", key, after=new[key])
    for key in sorted(old.keys() & new.keys()):
        if old[key]["dtype"] != new[key]["dtype"]:
            yield SignatureDifference(
                signature, f"{kind} dtype", key, old[key]["dtype"], new[key]["dtype"]
            )
        if old[key]["shape"] != new[key]["shape"]:
            yield SignatureDifference(
                signature, f"{kind} shape", key, _shape(old[key]["shape"]),
                _shape(new[key]["shape"]),
            )


def _refuse_if_moved(client, model_name, alias, version, expected, when):
    holder = _alias_holder(client, model_name, alias)
    if holder != expected:
        raise invalid_parameter_value(
            f"@{alias} of {model_name!r} was moved by another promotion {when}: it is now held by "
            f"{'version ' + holder if holder else 'no version'}, not "
            f"{'version ' + expected if expected else 'no version'}. Version {version} "
            f"{'was promoted but lost the race' if expected == version else 'was not promoted'}: "
            "check who promotes this model, then run the promotion again (it re-checks against "
            "the new holder)."
        )


def _alias_holder(client, model_name, alias):
    registered = client.get_registered_model(model_name)
    holder = (registered.aliases or {}).get(alias)
    return str(holder) if holder is not None else None


def _open_version(client, model_name, version):
    """A version's MLmodel file (the only file downloaded), through ``client``'s stores."""
    return open_model(
        f"models:/{model_name}/{version}", mlmodel_only=True, client=client,
        unreadable=lambda e: invalid_parameter_value(
            f"Cannot read the MLmodel file of version {version} of {model_name!r}: {e}. "
            "Re-register the model."
        ),
    )


def version_conf(client, model_name, version):
    """The :class:`~.flavor_conf.FlavorConf` of a version; raises if another flavor saved it."""
    return _open_version(client, model_name, version).conf


def _diff_with_holder(client, model_name, holder_version, candidate):
    holder = _open_version(client, model_name, holder_version)
    if not holder.is_this_flavor:
        # The alias was set by hand or by another tool: a server of it loads another flavor.
        flavors = ", ".join(sorted(holder.mlmodel.flavors or {}))
        return [SignatureDifference(None, "flavor", None, flavors, FLAVOR_NAME)]
    return signature_changes(holder.conf, candidate)


def _checked_flavor_conf(client, model_name, version):
    """The candidate's flavor configuration, after its layout and digests are checked."""
    from mlflow_eas_savedmodel import export

    conf = version_conf(client, model_name, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = download(
            f"models:/{model_name}/{version}", tmp, client=client, relative_path=conf.saved_model_dir
        )
        try:
            export.check_layout(local)
            conf.verify_files(
                local,
                unrecorded="its MLmodel records no file hashes (eas_savedmodel.file_sha256), so "
                "what would be served cannot be checked. Re-log and register the model.",
            )
        except MlflowException as e:
            raise invalid_parameter_value(
                f"Version {version} of {model_name!r} cannot be promoted: its SavedModel folder "
                f"is invalid. {e.message}"
            ) from e
    return conf


@click.command("promote")
@click.argument("model_name")
@click.argument("version")
@click.option("--alias", default=DEFAULT_ALIAS, show_default=True, help="The alias to move.")
@click.option(
    "--force", is_flag=True, help="Promote even if the SignatureDefs differ from the holder's."
)
@click.option(
    "--require-check", "require_checks", multiple=True, metavar="PROCESSOR",
    help="Refuse unless check-runtime passed on this EAS processor for the version "
         "(an eas.check.PROCESSOR tag starting with 'passed'); repeatable.",
)
@store_options
@user_errors
def promote_command(model_name, version, alias, force, require_checks):
    """Move ALIAS of MODEL_NAME to VERSION after checking flavor, layout and SignatureDefs.

    Exits with status 1 and lists the SignatureDef differences when they differ from the current
    alias holder's (unless --force).

    Example: mlflow-eas-savedmodel promote mnist 2 --alias champion --require-check tensorflow_cpu_1.15
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    result = promote(
        model_name, version, alias=alias, force=force, client=client, require_checks=require_checks
    )
    previous = f" (was version {result.previous_version})" if result.previous_version else ""
    click.echo(f"Promoted {model_name!r} version {result.version} to @{alias}{previous}.")
    if result.forced:
        click.echo("Forced despite these SignatureDef differences:")
        for difference in result.differences:
            click.echo(f"  - {difference}")


@click.command("tag")
@click.argument("model_name")
@click.argument("version", required=False)
@store_options
@user_errors
def tag_command(model_name, version):
    """Set the eas.processors and eas.tf_version tags on VERSION of MODEL_NAME (default: every version).

    For versions registered without this package (mlflow.register_model, the UI), so that
    search_model_versions("tags.`eas.processors` LIKE ...") finds them. Versions another
    flavor saved are skipped when no VERSION is given.

    Example: mlflow-eas-savedmodel tag mnist 3
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    for number, tags in _tags.tag_versions(model_name, version, client=client).items():
        if tags is None:
            click.echo(f"Skipped {model_name!r} version {number}: not saved by mlflow_eas_savedmodel.")
        else:
            listed = ", ".join(f"{k}={v!r}" for k, v in tags.items())
            click.echo(f"Tagged {model_name!r} version {number}: {listed}")


commands = [promote_command, tag_command]
