"""The SavedModel folder layout: file names, the variables prefix and the main-op key.

One place for what every TensorFlow loader from 1.12 to 2.21 expects on disk, so the writer
(:mod:`mlflow_eas_savedmodel.export`), the checks (:mod:`mlflow_eas_savedmodel.verify`,
:mod:`mlflow_eas_savedmodel.artifact_check`), the readers of sources and the EAS kit spell each
name once::

    saved_model.pb | saved_model.pbtxt
    variables/variables.index
    variables/variables.data-00000-of-00001
    assets/
    assets.extra/
"""

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
# TensorFlow's chunked format (``experimental_image_format``), which no EAS runtime reads.
CHUNKED_SAVED_MODEL = "saved_model.cpb"
SAVED_MODEL_FILES = (SAVED_MODEL_PB, SAVED_MODEL_PBTXT)

VARIABLES_DIR = "variables"
# The tensor-bundle prefix inside VARIABLES_DIR: ``variables/variables.index`` + data shards.
VARIABLES_PREFIX = "variables"
VARIABLES_INDEX = f"{VARIABLES_PREFIX}.index"
VARIABLES_DATA_PREFIX = f"{VARIABLES_PREFIX}.data-"

ASSETS_DIR = "assets"
ASSETS_EXTRA_DIR = "assets.extra"

# The collection every loader runs after restoring variables (tables, TF2 initializers).
MAIN_OP_KEY = "saved_model_main_op"
# The TF 1.x name of the same collection, which loaders still honour.
LEGACY_INIT_OP_KEY = "legacy_init_op"


def variables_prefix(saved_model_dir):
    """The tensor-bundle prefix of a SavedModel folder (``DIR/variables/variables``)."""
    import os

    return os.path.join(saved_model_dir, VARIABLES_DIR, VARIABLES_PREFIX)
