"""Importing the package stays cheap: no TensorFlow until a function needs it."""

import subprocess
import sys


def test_import_does_not_import_tensorflow_or_keras():
    code = (
        "import sys, mlflow_eas_savedmodel as mes\n"
        "assert callable(mes.save_model) and callable(mes.log_model) and callable(mes.load_model)\n"
        "import mlflow_eas_savedmodel.cli, mlflow_eas_savedmodel.pyfunc, mlflow_eas_savedmodel.runtimes\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_tensorflow_start_up_noise_stays_out_of_stderr():
    code = (
        "from mlflow_eas_savedmodel._tensorflow import import_tensorflow\n"
        "tf = import_tensorflow()\n"
        "tf.constant(1.0) + 1\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "oneDNN" not in out.stderr and "absl::InitializeLog" not in out.stderr, out.stderr
