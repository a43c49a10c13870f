"""FlavorConf: the one reader and writer of the MLmodel's ``eas_savedmodel`` entry.

The validation messages of damaged entries are asserted in test_artifact_tampering.py, the
byte-for-byte MLmodel of a save in test_flavor.py; here: the round trip, the optional keys, the
one "another flavor" message and the hash check's missing-hashes message.
"""

import re

import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from mlflow_eas_savedmodel.flavor_conf import FLAVOR_NAME, FlavorConf

SIGNATURE_DEFS = {"serving_default": {
    "method_name": "tensorflow/serving/predict",
    "inputs": {"x": {"name": "x:0", "dtype": "float32", "shape": [-1, 2]}},
    "outputs": {"y": {"name": "y:0", "dtype": "float32", "shape": [-1, 2]}},
}}


def _conf(**extra):
    return FlavorConf(
        source="session", tags=["serve"], default_signature="serving_default",
        signature_defs=SIGNATURE_DEFS, tensorflow_version="2.21.0", eas_processors=["tensorflow_cpu_1.15"],
        conversion_notes=[], verification={"static": "ok"}, file_sha256={"saved_model.pb": "0" * 64}, **extra,
    )


def test_written_keys_are_the_mlmodel_keys_in_save_order_and_read_back():
    written = _conf().to_dict()
    assert list(written) == [
        "saved_model_dir", "source", "tags", "default_signature", "signature_defs", "tensorflow_version",
        "eas_processors", "eas_incompatibilities", "conversion_notes", "verification", "file_sha256",
    ]
    assert written["saved_model_dir"] == "savedmodel"
    assert FlavorConf.read(Model(flavors={FLAVOR_NAME: written}), "m") == _conf()


def test_optional_keys_are_written_only_when_set():
    written = _conf(allow_file_ops=True, custom_objects="custom_objects.cloudpickle",
                    custom_objects_sha256="1" * 64).to_dict()
    assert list(written)[-3:] == ["allow_file_ops", "custom_objects", "custom_objects_sha256"]
    assert written["allow_file_ops"] is True


def test_an_entry_of_older_saves_reads_with_defaults_for_what_it_lacks():
    conf = FlavorConf.read({FLAVOR_NAME: {"saved_model_dir": "savedmodel", "signature_defs": SIGNATURE_DEFS,
                                          "default_signature": "serving_default"}}, "m")
    assert (conf.eas_processors, conf.eas_incompatibilities, conf.tags, conf.file_sha256) == ([], {}, [], None)


@pytest.mark.parametrize("flavors, listed", [({"sklearn": {}}, "['sklearn']"), ({}, "none")])
def test_a_model_of_another_flavor_gets_the_one_message(flavors, listed):
    with pytest.raises(MlflowException, match=re.escape(
        f"The model at 'models:/m/1' was not saved by mlflow_eas_savedmodel (its flavors: {listed}). "
        "Load it with the flavor that saved it (e.g. mlflow.pyfunc.load_model), or log it with "
        "mlflow_eas_savedmodel.log_model first."
    )):
        FlavorConf.read(Model(flavors=flavors), "models:/m/1")


def test_verify_files_without_recorded_hashes_gives_the_callers_message(tmp_path):
    conf = _conf()
    conf.file_sha256 = None
    with pytest.raises(MlflowException, match="no hashes: re-log it"):
        conf.verify_files(tmp_path, unrecorded="no hashes: re-log it")
    conf.file_sha256 = {"saved_model.pb": "0" * 64}
    (tmp_path / "saved_model.pb").write_bytes(b"graph")
    with pytest.raises(MlflowException, match="file 'saved_model.pb' was changed or truncated"):
        conf.verify_files(tmp_path, unrecorded="unused")
