"""Saving: ``save_model``, ``log_model`` and the environment files of a saved model.

``save_model`` produces two flavors: ``eas_savedmodel`` (a plain SavedModel folder that EAS's
TensorFlow processors load, plus every SignatureDef's metadata and the compatible processor
codes, see :mod:`.flavor_conf`) and ``python_function`` (see :mod:`.pyfunc`). It keeps MLflow's
fixed order: validate arguments and target path, input example, artifact (the source's
:mod:`.sources` conversion, then :func:`.export.export`), ``add_flavor``, ``pyfunc.add_to_model``,
MLmodel, environment files. It writes into a temporary folder beside ``path`` and moves it into
place only when complete, so a failed save leaves nothing behind. Loading is in :mod:`.load`.
"""

import contextlib
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
from mlflow.utils.environment import (
    _CONDA_ENV_FILE_NAME,
    _CONSTRAINTS_FILE_NAME,
    _PYTHON_ENV_FILE_NAME,
    _REQUIREMENTS_FILE_NAME,
    _mlflow_conda_env,
    _process_conda_env,
    _process_pip_requirements,
    _PythonEnv,
    _validate_env_arguments,
)
from mlflow.utils.docstring_utils import LOG_MODEL_PARAM_DOCS, format_docstring
from mlflow.utils.file_utils import get_total_file_size, write_to
from mlflow.utils.model_utils import _validate_and_copy_code_paths
from mlflow.utils.requirements_utils import _get_pinned_requirement

from mlflow_eas_savedmodel import export, integrity
from mlflow_eas_savedmodel.artifact import PARTIAL_MARK
from mlflow_eas_savedmodel.bundle import PACKAGE_NAME, default_bundle, is_package_requirement
from mlflow_eas_savedmodel._tensorflow import quiet_tensorflow
from mlflow_eas_savedmodel.errors import invalid_parameter_value
from mlflow_eas_savedmodel.flavor_conf import CUSTOM_OBJECTS_FILE, FLAVOR_NAME, SAVED_MODEL_DIR, FlavorConf
from mlflow_eas_savedmodel.graph import ops_policy
from mlflow_eas_savedmodel.graph.layout import VARIABLES_DIR
from mlflow_eas_savedmodel.metadata import OUTPUT_PARAM, SIGNATURE_NAME_PARAM, mlflow_signature

# A save in progress: the temporary folder's name holds PARTIAL_MARK, and MLmodel is named so
# until the end.
_PARTIAL_MLMODEL = "MLmodel.partial"
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

    Example:
        >>> import mlflow_eas_savedmodel as mes
        >>> [r.split("==")[0] for r in mes.get_default_pip_requirements()][1:]
        ['mlflow', 'mlflow-eas-savedmodel']
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
    """The default Conda environment of a model this flavor saves.

    Example:
        >>> import mlflow_eas_savedmodel as mes
        >>> env = mes.get_default_conda_env()
        >>> env["dependencies"][-1]["pip"] == mes.get_default_pip_requirements()
        True
    """
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
    allow_ops=None,
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
            ``tf.compat.v1.Session``, a SavedModel folder, or a ``tf.train.Saver`` (or TF2
            ``tf.train.Checkpoint``) checkpoint prefix: the kinds of
            :data:`.sources.SOURCES`, asked in that order (each a module of :mod:`.sources`).
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
            ``"runtimes"`` (or ``$MLFLOW_EAS_SAVEDMODEL_SAVE_VERIFY=runtimes``): also run the
            saved model in the real runtime of every claimed processor and drop the claims
            that fail, with the runtime's error (see :mod:`.verify_runtimes`).
        allow_file_ops: keep ops that read or write files or the network (``ReadFile``,
            ``WriteFile``, ``MatchingFiles``, ...) in the model; by default such a model is
            refused before anything of it runs (see docs/security.md). Python ops
            (``PyFunc``) are refused regardless.
        allow_ops: names of ops off the ops policy's allowlist to keep (e.g.
            ``["SqlDataset"]``; see docs/security.md): by default a model holding an op not
            known to compute without side effects is refused before anything of it runs. Recorded
            in MLmodel and honoured at load. Python ops are never accepted.
        safe_mode: read ``.keras``/``.h5`` files in Keras' safe mode (Keras 3 and tf_keras):
            a ``Lambda`` layer holding Python code is refused. Pass ``False`` only for a file
            you trust: loading it runs that code.
        conda_env, code_paths, mlflow_model, signature, input_example, pip_requirements,
            extra_pip_requirements, metadata: as in every MLflow flavor.

    Example:
        >>> import keras, numpy as np, mlflow_eas_savedmodel as mes
        >>> image = keras.Input((4,), name="image")
        >>> keras_model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
        >>> mes.save_model(keras_model, "model", eas_processor="tensorflow_cpu_1.15",
        ...                input_example=np.ones((2, 4), "float32"))
        >>> mes.load_model("model", device="cpu").predict(np.ones((2, 4), "float32"))["scores"].shape
        (2, 3)
    """
    from mlflow_eas_savedmodel import sources
    from mlflow_eas_savedmodel.eas.inputs import load_input_example
    from mlflow_eas_savedmodel.verify import check_mode
    from mlflow_eas_savedmodel.verify_runtimes import verify_in_runtimes

    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise invalid_parameter_value(
            f"Path {path!r} already exists and is not empty. Save to a new path, or delete it first."
        )
    validate_env_arguments(conda_env, pip_requirements, extra_pip_requirements)
    processor = export.Processor.of(eas_processor) if eas_processor is not None else None
    check_mode(verify)
    allow_ops = ops_policy.check_allow_ops(allow_ops)
    with _staged(path) as tmp:
        mlflow_model = mlflow_model or Model()
        if input_example is not None:
            _save_example(mlflow_model, input_example, tmp)
        code_dir = _validate_and_copy_code_paths(code_paths, tmp)

        options = sources.SourceOptions(
            inputs=inputs, outputs=outputs, signature_name=signature_name, signatures=signatures,
            default_signature=default_signature, init_op=init_op, build_fn=build_fn,
            custom_objects=custom_objects, input_example=input_example,
            allow_file_ops=allow_file_ops, safe_mode=safe_mode, allow_ops=tuple(allow_ops),
        )
        serving_graph = sources.to_serving_graph(model, options)
        exported = export.export(
            serving_graph, os.path.join(tmp, SAVED_MODEL_DIR), processor,
            allow_file_ops=allow_file_ops, allow_ops=allow_ops, verify=verify,
            example=load_input_example(mlflow_model, tmp) if input_example is not None else None,
        )
        del serving_graph  # consumed: its GraphDef was rewritten in place
        exported = verify_in_runtimes(  # verify="runtimes": the claims run in the real runtimes
            exported, os.path.join(tmp, SAVED_MODEL_DIR), verify, processor=processor,
            example=load_input_example(mlflow_model, tmp) if input_example is not None else None,
        )
        mlflow_model.signature = signature or mlflow_signature(
            exported.signature_defs, exported.default_signature
        )
        if metadata is not None:
            mlflow_model.metadata = metadata
        conf = FlavorConf.from_export(exported, _save_custom_objects(tmp, custom_objects))
        mlflow_model.add_flavor(FLAVOR_NAME, **conf.to_dict())
        _add_pyfunc_flavor(mlflow_model, code_dir, device)
        if size := get_total_file_size(tmp):
            mlflow_model.model_size_bytes = size
        # MLmodel gets its name last (by _staged): a save killed before that leaves a folder no
        # loader takes for a model (see docs/security.md, "Saves are atomic").
        mlflow_model.save(os.path.join(tmp, _PARTIAL_MLMODEL))
        _write_environment(
            tmp, conda_env, pip_requirements, extra_pip_requirements, custom_objects, bundle_package
        )
    _log_export(path, conf)


@contextlib.contextmanager
def _staged(path):
    """A temporary folder beside ``path`` that becomes ``path`` when the block succeeds.

    Its ``MLmodel.partial`` is renamed to ``MLmodel`` just before the folder is moved into
    place; a failure removes the folder.
    """
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}{PARTIAL_MARK}")
    try:
        yield tmp
        if os.path.isdir(path):
            os.rmdir(path)  # empty, checked by the caller; rename cannot replace it on every OS
        os.rename(os.path.join(tmp, _PARTIAL_MLMODEL), os.path.join(tmp, MLMODEL_FILE_NAME))
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_custom_objects(model_path, custom_objects):
    """Pickles ``custom_objects`` beside the SavedModel; returns the flavor conf's keys for it."""
    if custom_objects is None:
        return {}
    import cloudpickle

    path = os.path.join(model_path, CUSTOM_OBJECTS_FILE)
    with open(path, "wb") as f:
        cloudpickle.dump(custom_objects, f)
    return {"custom_objects": CUSTOM_OBJECTS_FILE, "custom_objects_sha256": integrity.sha256_file(path)}


def _add_pyfunc_flavor(mlflow_model, code_dir, device):
    pyfunc.add_to_model(
        mlflow_model,
        loader_module="mlflow_eas_savedmodel.pyfunc",
        data=SAVED_MODEL_DIR,
        code=code_dir,
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
        # None: the flavor's default_signature (stored there only), and
        # $MLFLOW_EAS_SAVEDMODEL_VERIFY decides verify_integrity (on by default). See .pyfunc.
        model_config={
            "device": device,
            SIGNATURE_NAME_PARAM: None,
            OUTPUT_PARAM: None,  # "labels": class indices (see .pyfunc)
            "verify_integrity": None,
        },
    )


def _log_export(path, conf):
    """One INFO line of what the export did: the conversion's notes live in MLmodel too."""
    variables = os.path.join(conf.saved_model_path(path), VARIABLES_DIR)
    weights = get_total_file_size(variables) if os.path.isdir(variables) else 0
    signatures = "; ".join(
        f"{name}({', '.join(s['inputs'])}) -> {', '.join(s['outputs'])}"
        for name, s in conf.signature_defs.items()
    )
    _logger.info(
        "Saved %s model to %s as a TF1 SavedModel: SignatureDefs %s (default %r); %s of weights "
        "in variables/; conversion: %s; EAS processors: %s",
        conf.source, path, signatures, conf.default_signature,
        f"{weights / 1e6:.1f} MB" if weights >= 1e5 else f"{weights or 0} bytes",
        "; ".join(conf.conversion_notes) or "frozen and rebuilt, nothing else changed",
        ", ".join(conf.eas_processors),
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


@format_docstring(LOG_MODEL_PARAM_DOCS.format(package_name=PACKAGE_NAME))
def log_model(
    model,
    artifact_path=None,
    *,
    name=None,
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
    allow_ops=None,
    safe_mode=True,
    conda_env=None,
    code_paths=None,
    signature=None,
    input_example=None,
    pip_requirements=None,
    extra_pip_requirements=None,
    metadata=None,
    registered_model_name=None,
    await_registration_for=DEFAULT_AWAIT_MAX_SLEEP_SECONDS,
    params=None,
    tags=None,
    model_type=None,
    step=0,
    model_id=None,
):
    """Saves ``model`` with :func:`save_model` and logs it to the active run.

    The logged model (MLflow 3's ``LoggedModel``: ``mlflow.search_logged_models``, the UI's model
    page) gets the tags ``eas.processors``, ``eas.tf_version`` and ``eas.verification``; a
    version it registers gets ``eas.processors`` and ``eas.tf_version`` (see
    :mod:`.registry_tags`). The environment arguments are checked before the export runs.

    Args:
        model: what :func:`save_model` converts: a Keras model, a ``.keras``/``.h5`` path, a
            ``tf.compat.v1.Session``, a ``tf.train.Saver`` checkpoint prefix or a SavedModel
            folder.
        artifact_path: Deprecated. Use ``name`` instead.
        name: {{ name }}
        inputs: signature inputs: ``{key: tensor | name}`` or a list of keys in the model's
            order (default: the model's own input names).
        outputs: signature outputs, same forms as ``inputs``.
        signature_name: the name of the one SignatureDef (default ``serving_default``).
        signatures: several SignatureDefs, ``{name: {"inputs": {...}, "outputs": {...},
            "method": "predict" | "classify" | "regress"}}`` (sessions and checkpoints).
        default_signature: the SignatureDef requests use when they name none.
        init_op: an op to run at load (sessions); table initializers are found automatically.
        build_fn: rebuilds the graph or model for a checkpoint without a ``.meta`` file.
        custom_objects: Keras custom objects needed to load a ``.keras``/``.h5`` file.
        eas_processor: an EAS processor code such as ``"tensorflow_cpu_1.15"``: the save fails
            unless the graph runs there.
        device: default device of the ``python_function`` flavor (``model_config["device"]``).
        bundle_package: ``True``, a wheel path, ``False`` or ``None`` (default: carry this
            package's wheel unless it was installed from a package index), see :func:`save_model`.
        verify: ``True``, ``"static"``, ``"runtimes"`` (also run the claims in the real EAS
            runtimes) or ``False``, see :func:`save_model`.
        allow_file_ops: keep file and network ops in the model (refused by default).
        allow_ops: names of ops off the ops policy's allowlist to keep (recorded in MLmodel;
            never Python ops), see :func:`save_model`.
        safe_mode: read ``.keras``/``.h5`` files in Keras' safe mode (default ``True``).
        conda_env: {{ conda_env }}
        code_paths: {{ code_paths }}
        signature: {{ signature }}
        input_example: {{ input_example }}
        pip_requirements: {{ pip_requirements }}
        extra_pip_requirements: {{ extra_pip_requirements }}
        metadata: {{ metadata }}
        registered_model_name: If given, create a model version under this name (and the
            registered model if it does not exist yet).
        await_registration_for: Seconds to wait for the model version to become ``READY``
            (default: MLflow's ``DEFAULT_AWAIT_MAX_SLEEP_SECONDS``); 0 or None: do not wait.
        params: {{ params }}
        tags: {{ tags }}
        model_type: {{ model_type }}
        step: {{ step }}
        model_id: {{ model_id }}

    Returns:
        A :class:`mlflow.models.model.ModelInfo`.

    Example:
        >>> import keras, mlflow, numpy as np, mlflow_eas_savedmodel as mes
        >>> mlflow.set_tracking_uri("sqlite:///mlflow.db")
        >>> image = keras.Input((4,), name="image")
        >>> keras_model = keras.Model(image, keras.layers.Dense(3, name="scores")(image))
        >>> with mlflow.start_run():
        ...     info = mes.log_model(keras_model, name="model", registered_model_name="mnist",
        ...                          input_example=np.ones((2, 4), "float32"))
        >>> mlflow.pyfunc.load_model("models:/mnist/1").predict(np.ones((2, 4), "float32")).shape
        (2, 3)
    """
    import mlflow_eas_savedmodel

    validate_env_arguments(conda_env, pip_requirements, extra_pip_requirements)
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
        inputs=inputs,
        outputs=outputs,
        signature_name=signature_name,
        signatures=signatures,
        default_signature=default_signature,
        init_op=init_op,
        build_fn=build_fn,
        custom_objects=custom_objects,
        eas_processor=eas_processor,
        device=device,
        bundle_package=bundle_package,
        verify=verify,
        allow_file_ops=allow_file_ops,
        allow_ops=allow_ops,
        safe_mode=safe_mode,
        conda_env=conda_env,
        code_paths=code_paths,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        metadata=metadata,
    )
    from mlflow import MlflowClient

    from mlflow_eas_savedmodel.registry_tags import logged_model_tags, tag_registered_version

    conf = FlavorConf.read(model_info.flavors, model_info.model_uri)
    client = MlflowClient()
    if getattr(model_info, "model_id", None):
        client.set_logged_model_tags(model_info.model_id, logged_model_tags(conf))
    if registered_model_name is not None and model_info.registered_model_version is not None:
        tag_registered_version(client, registered_model_name, model_info.registered_model_version, conf)
    return model_info


def validate_env_arguments(conda_env, pip_requirements, extra_pip_requirements):
    """MLflow's own check that at most one environment argument is given, as an MlflowException.

    MLflow's flavors run it before any work; here it runs before the export, so a wrong call
    costs nothing (the environment files are written last).
    """
    try:
        _validate_env_arguments(conda_env, pip_requirements, extra_pip_requirements)
    except ValueError as e:
        raise invalid_parameter_value(
            f"{e}. Pass one of them: put extra requirements into conda_env's pip section, or "
            "use pip_requirements (the full list) or extra_pip_requirements (added to the defaults)."
        ) from e
