"""The ``eas_savedmodel`` MLflow flavor: ``save_model``, ``log_model``, ``load_model``.

Produces two flavors: ``eas_savedmodel`` (a plain SavedModel folder that EAS's TensorFlow
processors load, plus every SignatureDef's metadata and the compatible processor codes) and
``python_function`` (see :mod:`.pyfunc`). ``save_model`` keeps MLflow's fixed order: validate
arguments and target path, input example, artifact, ``add_flavor``, ``pyfunc.add_to_model``,
MLmodel, environment files. It writes into a temporary folder beside ``path`` and moves it into
place only when complete, so a failed save leaves nothing behind.
"""

import importlib.metadata
import logging
import os
import shutil
import tempfile

import yaml
from mlflow import pyfunc
from mlflow.models import Model
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.models.utils import _save_example
from mlflow.tracking._model_registry import DEFAULT_AWAIT_MAX_SLEEP_SECONDS
from mlflow.tracking.artifact_utils import _download_artifact_from_uri
from mlflow.utils.environment import (
    _CONDA_ENV_FILE_NAME,
    _CONSTRAINTS_FILE_NAME,
    _PYTHON_ENV_FILE_NAME,
    _REQUIREMENTS_FILE_NAME,
    _mlflow_conda_env,
    _process_conda_env,
    _process_pip_requirements,
    _PythonEnv,
)
from mlflow.utils.file_utils import get_total_file_size, write_to
from mlflow.utils.model_utils import _get_flavor_configuration, _validate_and_copy_code_paths
from mlflow.utils.requirements_utils import _get_pinned_requirement

from mlflow_eas_savedmodel import integrity
from mlflow_eas_savedmodel.bundle import PACKAGE_NAME, default_bundle, is_package_requirement
from mlflow_eas_savedmodel import metadata as _metadata
from mlflow_eas_savedmodel._tensorflow import quiet_tensorflow
from mlflow_eas_savedmodel.eas import artifact as _artifact
from mlflow_eas_savedmodel.errors import invalid
from mlflow_eas_savedmodel.graph import ops_policy
from mlflow_eas_savedmodel.graph.serving_graph import SERVING_TAG

FLAVOR_NAME = "eas_savedmodel"
SAVED_MODEL_DIR = "savedmodel"
CUSTOM_OBJECTS_FILE = _artifact.CUSTOM_OBJECTS_FILE
CUSTOM_OBJECTS_SHA256 = _artifact.CUSTOM_OBJECTS_SHA256
# A save in progress: the temporary folder's name holds it, and MLmodel is named so until the end.
PARTIAL_MARK = ".partial-"
_PARTIAL_MLMODEL = "MLmodel.partial"
ALLOW_FILE_OPS = "allow_file_ops"  # recorded when the owner opted in at save
_TENSORFLOW_DISTRIBUTIONS = ("tensorflow-cpu", "tensorflow", "tensorflow-gpu", "tf-nightly")

_logger = logging.getLogger(__name__)


def _tensorflow_requirement():
    for dist in _TENSORFLOW_DISTRIBUTIONS:
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        return _get_pinned_requirement(dist)
    return "tensorflow"


def get_default_pip_requirements(include_cloudpickle=False):
    """The pinned requirements of a model this flavor saves: TensorFlow, MLflow, this package.

    Pinned from what is installed (the TensorFlow distribution actually in use, e.g.
    ``tensorflow-cpu``), without MLflow's subprocess-based inference, which costs seconds.
    """
    reqs = [_tensorflow_requirement(), _get_pinned_requirement("mlflow"), _package_requirement()]
    if include_cloudpickle:
        reqs.append(_get_pinned_requirement("cloudpickle"))
    return reqs


def _package_requirement():
    try:
        return f"{PACKAGE_NAME}=={importlib.metadata.version(PACKAGE_NAME)}"
    except importlib.metadata.PackageNotFoundError:
        return PACKAGE_NAME


def get_default_conda_env(include_cloudpickle=False):
    """The default Conda environment of a model this flavor saves."""
    return _mlflow_conda_env(additional_pip_deps=get_default_pip_requirements(include_cloudpickle))


@quiet_tensorflow()  # the TF1 APIs the export needs print deprecations and C++ notices
def save_model(
    model,
    path,
    inputs=None,
    outputs=None,
    signature_name=None,
    signatures=None,
    default_signature=None,
    init_op=None,
    build_fn=None,
    custom_objects=None,
    eas_processor=None,
    device=None,
    bundle_package=None,
    verify=True,
    allow_file_ops=False,
    safe_mode=True,
    conda_env=None,
    code_paths=None,
    mlflow_model=None,
    signature=None,
    input_example=None,
    pip_requirements=None,
    extra_pip_requirements=None,
    metadata=None,
):
    """Converts ``model`` to an EAS-loadable SavedModel and saves it as an MLflow model.

    Args:
        model: a Keras model (Keras 3 or tf_keras), a path to a ``.keras``/``.h5`` file, a
            ``tf.compat.v1.Session``, a ``tf.train.Saver`` checkpoint prefix, or a SavedModel
            folder.
        path: the new MLflow model folder (must not exist, or be empty).
        inputs: signature inputs: ``{key: tensor | name}`` or a list of keys in the model's
            order (default: the model's own input names).
        outputs: signature outputs, same forms as ``inputs``.
        signature_name: the name of the one SignatureDef (default ``serving_default``).
        signatures: several SignatureDefs, ``{name: {"inputs": {...}, "outputs": {...},
            "method": "predict" | "classify" | "regress"}}`` (sessions and checkpoints).
        default_signature: the SignatureDef requests use when they name none.
        init_op: an op to run at load (sessions); table initializers are found automatically.
        build_fn: rebuilds the graph or model for a checkpoint without a ``.meta`` file.
        custom_objects: Keras custom objects needed to load a ``.keras``/``.h5`` file; stored
            with cloudpickle (the only thing this flavor ever pickles) and given back at load.
        eas_processor: an EAS processor code such as ``"tensorflow_cpu_1.15"``: the save fails
            unless the graph runs there. With ``None`` the compatible processors are recorded,
            and the save fails only if there is none.
        device: default device of the ``python_function`` flavor (``model_config["device"]``).
        bundle_package: ``True`` (build from the source checkout) or the path of a prebuilt
            wheel of this package: the wheel is stored in the model under ``wheels/`` and
            ``requirements.txt`` names it, so ``mlflow models serve --env-manager uv`` builds a
            working environment where this package is not installed (see :mod:`.bundle`).
            ``None`` (default): bundle unless this package was installed from a package index,
            where the pinned requirement resolves; ``False``: never.
        verify: ``True`` (default): before the folder is moved into place, check every
            variable against ``variables/`` and every SignatureDef tensor, then load the
            SavedModel with TensorFlow's TF1 loader and run every SignatureDef on the input
            example (or synthesised inputs), compared with the source model's own outputs;
            the run is skipped above 1 GiB of variables (``$MLFLOW_EAS_SAVEDMODEL_VERIFY_MAX_BYTES``).
            ``"static"``: the checks without the run. ``False``: neither. See :mod:`.verify`.
        allow_file_ops: keep ops that read or write files or the network (``ReadFile``,
            ``WriteFile``, ``MatchingFiles``, ...) in the model; by default such a model is
            refused before anything of it runs (see docs/security.md). Python ops
            (``PyFunc``) are refused regardless.
        safe_mode: read ``.keras``/``.h5`` files in Keras' safe mode (Keras 3 and tf_keras):
            a ``Lambda`` layer holding Python code is refused. Pass ``False`` only for a file
            you trust: loading it runs that code.
        conda_env, code_paths, mlflow_model, signature, input_example, pip_requirements,
            extra_pip_requirements, metadata: as in every MLflow flavor.

    Example:
        >>> import mlflow_eas_savedmodel as mes
        >>> mes.save_model(keras_model, "model", inputs={"image": keras_model.input},
        ...                outputs={"scores": keras_model.output})
    """
    from mlflow_eas_savedmodel import export, runtimes, sources
    from mlflow_eas_savedmodel import verify as _verify
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow
    from mlflow_eas_savedmodel.eas.inputs import load_input_example
    from mlflow_eas_savedmodel.runtimes import semantic

    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise invalid(
            f"Path {path!r} already exists and is not empty. Save to a new path, or delete it first."
        )
    if eas_processor is not None:
        runtimes.processor_version(eas_processor)
    _verify.check_mode(verify)
    tf = import_tensorflow()

    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}{PARTIAL_MARK}")
    try:
        mlflow_model = mlflow_model or Model()
        if input_example is not None:
            _save_example(mlflow_model, input_example, tmp)
        code_dir = _validate_and_copy_code_paths(code_paths, tmp)

        options = sources.SourceOptions(
            inputs=inputs,
            outputs=outputs,
            signature_name=signature_name,
            signatures=signatures,
            default_signature=default_signature,
            init_op=init_op,
            build_fn=build_fn,
            custom_objects=custom_objects,
            input_example=input_example,
            allow_file_ops=allow_file_ops,
            safe_mode=safe_mode,
        )
        serving_graph = sources.to_serving_graph(model, options)
        ops_policy.check_graph_def(
            serving_graph.graph_def, f"The {serving_graph.source} model", allow_file_ops
        )
        meta_graph_def, values = export.build_meta_graph(serving_graph)
        compatible, problems = runtimes.check_all(meta_graph_def.graph_def)
        serving_graph.notes.extend(semantic.rule_notes(problems))
        _check_processors(eas_processor, compatible, problems)
        written = export.write_saved_model(os.path.join(tmp, SAVED_MODEL_DIR), meta_graph_def, values)
        export.check_layout(os.path.join(tmp, SAVED_MODEL_DIR))
        file_sha256 = integrity.hash_tree_reusing(os.path.join(tmp, SAVED_MODEL_DIR), written)
        del values
        verification = _verify.verify_saved_model(
            os.path.join(tmp, SAVED_MODEL_DIR),
            meta_graph_def,
            reference=serving_graph.reference,
            example=load_input_example(mlflow_model, tmp) if input_example is not None else None,
            mode=verify,
        )

        signature_defs = _metadata.describe_signature_defs(meta_graph_def)
        default = serving_graph.default_signature
        if signature is None:
            signature = _metadata.mlflow_signature(signature_defs, default)
        mlflow_model.signature = signature
        if metadata is not None:
            mlflow_model.metadata = metadata
        if custom_objects is not None:
            import cloudpickle

            with open(os.path.join(tmp, CUSTOM_OBJECTS_FILE), "wb") as f:
                cloudpickle.dump(custom_objects, f)
            custom_objects_sha256 = integrity.sha256_file(os.path.join(tmp, CUSTOM_OBJECTS_FILE))

        flavor_conf = {
            "saved_model_dir": SAVED_MODEL_DIR,
            "source": serving_graph.source,
            "tags": [SERVING_TAG],
            "default_signature": default,
            "signature_defs": signature_defs,
            "tensorflow_version": tf.__version__,
            "eas_processors": compatible,
            "eas_incompatibilities": {
                v: sorted({p.reason for p in ps})[:5] for v, ps in problems.items() if ps
            },
            "conversion_notes": serving_graph.notes,
            "verification": verification,
            integrity.FLAVOR_KEY: file_sha256,
        }
        if allow_file_ops:
            flavor_conf[ALLOW_FILE_OPS] = True
        if custom_objects is not None:
            flavor_conf["custom_objects"] = CUSTOM_OBJECTS_FILE
            flavor_conf[CUSTOM_OBJECTS_SHA256] = custom_objects_sha256
        mlflow_model.add_flavor(FLAVOR_NAME, **flavor_conf)
        pyfunc.add_to_model(
            mlflow_model,
            loader_module="mlflow_eas_savedmodel.pyfunc",
            data=SAVED_MODEL_DIR,
            code=code_dir,
            conda_env=_CONDA_ENV_FILE_NAME,
            python_env=_PYTHON_ENV_FILE_NAME,
            # verify_integrity None: $MLFLOW_EAS_SAVEDMODEL_VERIFY decides, on by default.
            model_config={
                "device": device,
                _metadata.SIGNATURE_NAME_PARAM: default,
                _metadata.OUTPUT_PARAM: None,  # "labels": class indices (see .pyfunc)
                "verify_integrity": None,
            },
        )
        if size := get_total_file_size(tmp):
            mlflow_model.model_size_bytes = size
        # MLmodel gets its name last: a save killed before that leaves a folder no loader takes
        # for a model (see docs/security.md, "Saves are atomic").
        mlflow_model.save(os.path.join(tmp, _PARTIAL_MLMODEL))
        _write_environment(
            tmp, conda_env, pip_requirements, extra_pip_requirements, custom_objects, bundle_package
        )
        if os.path.isdir(path):
            os.rmdir(path)  # empty, checked above; rename cannot replace it on every OS
        os.rename(os.path.join(tmp, _PARTIAL_MLMODEL), os.path.join(tmp, MLMODEL_FILE_NAME))
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log_export(path, serving_graph, signature_defs, compatible)


def _log_export(path, serving_graph, signature_defs, compatible):
    """One INFO line of what the export did: the conversion's notes live in MLmodel too."""
    variables = os.path.join(path, SAVED_MODEL_DIR, "variables")
    weights = get_total_file_size(variables) if os.path.isdir(variables) else 0
    signatures = "; ".join(
        f"{name}({', '.join(s['inputs'])}) -> {', '.join(s['outputs'])}"
        for name, s in signature_defs.items()
    )
    _logger.info(
        "Saved %s model to %s as a TF1 SavedModel: SignatureDefs %s (default %r); %s of weights "
        "in variables/; conversion: %s; EAS processors: %s",
        serving_graph.source, path, signatures, serving_graph.default_signature,
        f"{weights / 1e6:.1f} MB" if weights >= 1e5 else f"{weights or 0} bytes",
        "; ".join(serving_graph.notes) or "frozen and rebuilt, nothing else changed",
        ", ".join(compatible),
    )


def _check_processors(eas_processor, compatible, problems):
    from mlflow_eas_savedmodel import runtimes

    if eas_processor is not None:
        version = runtimes.processor_version(eas_processor)
        if problems[version]:
            raise invalid(
                f"The model cannot run on EAS processor {eas_processor!r} (TensorFlow {version}):\n  "
                f"{runtimes.summarize(problems[version])}\n"
                + (
                    f"It can run on: {', '.join(compatible)}. Pass one of those as eas_processor=, "
                    "or eas_processor=None to record all compatible processors."
                    if compatible
                    else "No EAS processor can run it: replace the ops above with older ones."
                )
            )
    elif not compatible:
        lines = "\n  ".join(
            f"TF {v}: {runtimes.summarize(ps, limit=3)}" for v, ps in problems.items()
        )
        raise invalid(
            "No EAS TensorFlow processor (TF 1.12-2.7) can run this model:\n  "
            f"{lines}\nReplace these ops with ones older TensorFlow versions have."
        )


def _write_environment(
    path, conda_env, pip_requirements, extra_pip_requirements, custom_objects, bundle_package=None
):
    if conda_env is None:
        default_reqs = None if pip_requirements is not None else get_default_pip_requirements(
            include_cloudpickle=custom_objects is not None
        )
        conda_env, pip_requirements, pip_constraints = _process_pip_requirements(
            default_reqs, pip_requirements, extra_pip_requirements
        )
    else:
        conda_env, pip_requirements, pip_constraints = _process_conda_env(conda_env)
    if bundle_package is None and any(is_package_requirement(r) for r in pip_requirements):
        bundle_package = default_bundle()  # only where the pinned requirement cannot resolve
    if bundle_package:
        pip_requirements = _bundle_package(path, bundle_package, pip_requirements, conda_env)
    with open(os.path.join(path, _CONDA_ENV_FILE_NAME), "w") as f:
        yaml.safe_dump(conda_env, stream=f, default_flow_style=False)
    if pip_constraints:
        write_to(os.path.join(path, _CONSTRAINTS_FILE_NAME), "\n".join(pip_constraints))
    write_to(os.path.join(path, _REQUIREMENTS_FILE_NAME), "\n".join(pip_requirements))
    _PythonEnv.current().to_yaml(os.path.join(path, _PYTHON_ENV_FILE_NAME))


def _bundle_package(path, bundle_package, pip_requirements, conda_env):
    """Stores this package's wheel in the model and names it instead of the index requirement."""
    from mlflow_eas_savedmodel import bundle

    wheel = bundle.bundle_into(path, bundle_package)
    requirements = [r for r in pip_requirements if not bundle.is_package_requirement(r)] + [wheel]
    for dependency in conda_env.get("dependencies", []):
        if isinstance(dependency, dict) and "pip" in dependency:
            dependency["pip"] = [r for r in dependency["pip"] if not bundle.is_package_requirement(r)]
            dependency["pip"].append(wheel)
    return requirements


def log_model(
    model,
    artifact_path=None,
    *,
    name=None,
    registered_model_name=None,
    await_registration_for=DEFAULT_AWAIT_MAX_SLEEP_SECONDS,
    params=None,
    tags=None,
    model_type=None,
    step=0,
    model_id=None,
    **save_kwargs,
):
    """Saves ``model`` with :func:`save_model` and logs it to the active run.

    Takes every argument of :func:`save_model` (but ``path``) plus MLflow's logging arguments
    (``name``, ``registered_model_name``, ``params``, ``tags``...). Returns ``ModelInfo``. A
    version it registers gets the tags ``eas.processors`` and ``eas.tf_version`` (see
    :mod:`.registry_tags`).

    Example:
        >>> with mlflow.start_run():
        ...     info = mes.log_model(keras_model, name="model", input_example=x[:2],
        ...                          registered_model_name="mnist")
    """
    import mlflow_eas_savedmodel

    model_info = Model.log(
        artifact_path=artifact_path,
        name=name,
        flavor=mlflow_eas_savedmodel,
        model=model,
        registered_model_name=registered_model_name,
        await_registration_for=await_registration_for,
        params=params,
        tags=tags,
        model_type=model_type,
        step=step,
        model_id=model_id,
        **save_kwargs,
    )
    if registered_model_name is not None and model_info.registered_model_version is not None:
        from mlflow import MlflowClient

        from mlflow_eas_savedmodel.registry_tags import tag_registered_version

        tag_registered_version(
            MlflowClient(), registered_model_name, model_info.registered_model_version,
            model_info.flavors[FLAVOR_NAME],
        )
    return model_info


def load_model(model_uri, device=None, dst_path=None, verify_integrity=None):
    """Loads a model saved by this flavor as an :class:`~mlflow_eas_savedmodel.model.EasSavedModel`.

    Args:
        model_uri: ``runs:/...``, ``models:/name/1``, ``models:/name@alias`` or a local path.
        device: ``"cpu"``, ``"gpu"``, ``"/GPU:1"``... or ``None`` for
            ``$MLFLOW_DEFAULT_PREDICTION_DEVICE``, else a GPU if one is visible, else the CPU.
        dst_path: where to download the model (default: a temporary folder).
        verify_integrity: check every SavedModel file against the SHA-256 recorded at save time
            and fail on a changed, truncated, missing or extra file, or when no hashes are
            recorded. ``None`` means on unless ``$MLFLOW_EAS_SAVEDMODEL_VERIFY=0``; pass
            ``False`` to skip hashing very large models. Whatever it says, a load refuses
            symlinks, a ``.partial-`` folder, a damaged MLmodel, a graph with file or Python ops
            and a custom-objects pickle that does not match its recorded SHA-256.

    Example:
        >>> handle = mes.load_model("models:/mnist@champion", device="cpu")
        >>> handle.signatures["serving_default"]["inputs"]
        >>> handle.predict({"image": x})["scores"]
    """
    local_path = _download_artifact_from_uri(artifact_uri=model_uri, output_path=dst_path)
    _refuse_unfinished(local_path)
    conf = _flavor_conf(local_path)
    return _load_handle(
        os.path.join(local_path, conf["saved_model_dir"]),
        device=device,
        verify_integrity=verify_integrity,
        conf=conf,
    )


def _flavor_conf(model_path):
    try:
        conf = _get_flavor_configuration(model_path, FLAVOR_NAME)
    except Exception as e:  # noqa: BLE001 - MLflow raises MlflowException or OSError here
        flavors = []
        try:
            flavors = list(Model.load(model_path).flavors)
        except Exception:  # noqa: BLE001
            pass
        raise invalid(
            f"The model at {model_path!r} was not saved by mlflow_eas_savedmodel (its flavors: "
            f"{flavors or 'none'}). Load it with the flavor that saved it, e.g. "
            "mlflow.pyfunc.load_model."
        ) from e
    return _artifact.validate_flavor_conf(conf, model_path)


def _refuse_unfinished(model_path):
    """A ``.<name>.partial-*`` folder is a save that was killed: never load it as a model."""
    name = os.path.basename(os.path.normpath(model_path))
    if name.startswith(".") and PARTIAL_MARK in name:
        raise invalid(
            f"{model_path!r} is the temporary folder of a save_model that did not finish (the "
            "process was killed): it is not a model. Delete it and save the model again."
        )


def _load_handle(saved_model_dir, device=None, verify_integrity=None, conf=None):
    """Loads the SavedModel folder; ``conf`` is the flavor conf when the caller has read it."""
    from mlflow_eas_savedmodel.model import EasSavedModel

    model_path = os.path.dirname(os.path.abspath(saved_model_dir))
    _refuse_unfinished(model_path)
    conf = conf or _flavor_conf(model_path)
    if os.path.abspath(saved_model_dir) != os.path.join(model_path, conf["saved_model_dir"]):
        raise invalid(
            f"{saved_model_dir!r} is not the SavedModel folder {conf['saved_model_dir']!r} that "
            "the model's MLmodel file names. Download or copy the model again."
        )
    # Symlinks first, always: hashing follows them, so a link would pass for an inside file.
    integrity.refuse_symlinks(model_path)
    if integrity.should_verify(verify_integrity):
        if integrity.FLAVOR_KEY not in conf:
            raise invalid(
                f"The MLmodel file of {model_path!r} records no file hashes "
                f"({FLAVOR_NAME}.{integrity.FLAVOR_KEY}), so its SavedModel cannot be checked. "
                "Re-log the model, or load a model you trust with verify_integrity=False "
                f"(or {integrity.VERIFY_ENV}=0)."
            )
        integrity.verify(saved_model_dir, conf[integrity.FLAVOR_KEY])
    _check_artifact_graph(saved_model_dir, conf)
    handle = EasSavedModel(
        saved_model_dir, conf["signature_defs"], conf["default_signature"], device=device
    )
    handle.custom_objects = _load_custom_objects(model_path, conf)
    return handle


def _check_artifact_graph(saved_model_dir, conf):
    """The ops policy again, on the artifact's own graph, before TensorFlow loads it.

    The save checked the graph already; this catches an artifact whose ``saved_model.pb`` was
    replaced (with its hashes, or with the check skipped) by one that reads files or runs Python.
    """
    from mlflow_eas_savedmodel.sources import assets
    from mlflow_eas_savedmodel.sources.saved_model import read_saved_model

    meta_graphs = read_saved_model(saved_model_dir).meta_graphs
    what = f"The SavedModel of the model at {os.path.dirname(saved_model_dir)!r}"
    for meta_graph in meta_graphs:
        ops_policy.check_meta_graph(
            meta_graph, what, assets.check_assets(meta_graph, saved_model_dir),
            allow_file_ops=conf.get(ALLOW_FILE_OPS) is True,
            outcome="it was not loaded",
        )


def _load_custom_objects(model_path, conf):
    """Unpickles ``custom_objects.cloudpickle`` only if it is the file hashed at save time.

    Checked whatever ``verify_integrity`` says: skipping the hashes saves time on large
    variable files, while this file is small and unpickling it runs code.
    """
    if "custom_objects" not in conf:
        return None
    import cloudpickle

    path = os.path.join(model_path, CUSTOM_OBJECTS_FILE)
    expected = conf.get(CUSTOM_OBJECTS_SHA256)
    if expected is None:
        raise invalid(
            f"The MLmodel file of {model_path!r} names custom objects but records no "
            f"{FLAVOR_NAME}.{CUSTOM_OBJECTS_SHA256}, so {CUSTOM_OBJECTS_FILE} cannot be checked "
            "before it is unpickled (which runs code). Re-log the model with custom_objects=."
        )
    if not os.path.isfile(path):
        raise invalid(f"{path!r} is missing. Download or copy the model again.")
    digest = integrity.sha256_file(path)
    if digest != expected:
        raise invalid(
            f"{path!r} does not match the SHA-256 recorded when the model was saved ({digest[:12]}"
            f"..., recorded {expected[:12]}...): it was changed or cut short and was not "
            "unpickled. Download or copy the model again, or re-log it."
        )
    try:
        with open(path, "rb") as f:
            return cloudpickle.load(f)
    except Exception as e:  # noqa: BLE001 - unpickling raises anything the pickle's code raises
        raise invalid(
            f"Cannot unpickle {path!r}: {type(e).__name__}: {e}. Make the custom objects' modules "
            "importable (code_paths=) or re-log the model."
        ) from e
