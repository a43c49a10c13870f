"""The EAS deployment kit: everything between a logged model and a running PAI-EAS service.

One module per concern, all working on a model saved by this flavor:

- :mod:`.mlmodel`: the MLmodel metadata and the files of a model URI (no TensorFlow).
- :mod:`.inspection`: ``inspect``, the SignatureDefs and processors from the metadata alone.
- :mod:`.package`: ``export``, the plain SavedModel folder or archive EAS reads from OSS, and
  its SHA-256 manifest.
- :mod:`.service_config`: ``eas-config``, the EAS service JSON.
- :mod:`.protocol`: EAS's TensorFlow-processor protobuf (``PredictRequest``/``PredictResponse``).
- :mod:`.endpoint`: a local HTTP endpoint that speaks that protocol, for smoke tests.
- :mod:`.warmup`: EAS ``.bin`` and TF Serving ``tf_serving_warmup_requests`` warm-up files.
- :mod:`.inputs`: request inputs per SignatureDef (input example, given, or synthesised).
- :mod:`.runtime_check`: ``check_runtime``, the model run in the official old TF wheels.
- :mod:`.official_client`: the official ``eas-prediction`` client in its own cached venv
  (it pins protobuf<=3.20.3), used by the tests to prove byte compatibility.
- :mod:`.commands`: the click commands of the ``mlflow-eas-savedmodel`` CLI.

Importing this package does not import TensorFlow.
"""
