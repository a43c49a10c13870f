"""The tests' one reader (and writer) of an artifact's MLmodel file, as the plain YAML mapping.

Tests assert on the raw mapping (keys MLflow's ``Model`` would drop or fill in included) and
tamper with it, so this reads YAML, not ``mlflow.models.Model``. ``path`` is the model folder or
the MLmodel file itself.
"""

from pathlib import Path

import yaml

FLAVOR = "eas_savedmodel"


def mlmodel_file(path):
    path = Path(path)
    return path if path.name == "MLmodel" else path / "MLmodel"


def read_mlmodel(path):
    """The whole MLmodel mapping of the model at ``path``."""
    return yaml.safe_load(mlmodel_file(path).read_text())


def read_flavor(path):
    """The MLmodel's ``eas_savedmodel`` entry (what ``FlavorConf`` reads)."""
    return read_mlmodel(path)["flavors"][FLAVOR]


def write_mlmodel(path, doc):
    """Writes ``doc`` back as the MLmodel of the model at ``path`` (tests that tamper with it)."""
    mlmodel_file(path).write_text(yaml.safe_dump(doc))
