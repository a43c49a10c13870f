"""The README's first command, ``python examples/demo.py``, end to end in a subprocess.

It is the main job's test: train, log into a sqlite store, register, promote, serve with
``mlflow models serve``, request with ``params.signature_name``, stop the server. The served
answer is compared with the promoted model loaded here, and the server must be gone afterwards.
"""

import json
import os
import re
import socket
import subprocess
import sys

import mlflow
import numpy as np
import pytest

from support.servers import VENV_BIN
from support.paths import REPO

pytestmark = pytest.mark.server

DEMO = str(REPO / "examples" / "demo.py")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    # As a newcomer runs it: the venv is not activated, so its bin folder is not on PATH.
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != VENV_BIN)
    env = dict(os.environ, PATH=path)
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.run(
        [sys.executable, DEMO], cwd=work, env=env, capture_output=True, text=True, timeout=400
    )
    return work, process


def test_demo_prints_every_step_and_succeeds(demo_run):
    _, process = demo_run
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    steps = re.findall(r"\] (\d)/5 ", process.stdout)
    assert steps == ["1", "2", "3", "4", "5"], process.stdout
    assert "registered 'demo-mnist' version 1" in process.stdout
    assert "@champion -> version 1" in process.stdout
    assert "params.signature_name='predict_images'" in process.stdout


def test_demo_answer_matches_the_promoted_model(demo_run):
    work, process = demo_run
    assert process.returncode == 0, process.stderr[-3000:]
    store = work / "demo-work"
    request = json.loads((store / "request.json").read_text())
    response = json.loads((store / "response.json").read_text())
    assert request["params"] == {"signature_name": "predict_images"}

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    try:
        model_uri = "models:/demo-mnist@champion"
        model = mlflow.pyfunc.load_model(model_uri)
        expected = model.predict({"image": np.asarray(request["inputs"]["image"], np.float32)}, params=request["params"])
        flavor = mlflow.models.get_model_info(model_uri).flavors["eas_savedmodel"]
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_allclose(response["predictions"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(response["predictions"], axis=1), 1.0, rtol=1e-5)  # softmax
    assert list(flavor["signature_defs"]) == ["predict_images"]
    assert f"Compatible EAS processors: {', '.join(flavor['eas_processors'])}" in process.stdout
    assert "tensorflow_cpu_1.15" in flavor["eas_processors"]


def test_demo_stops_its_server(demo_run):
    _, process = demo_run
    port = int(re.search(r"on 127\.0\.0\.1:(\d+)", process.stdout).group(1))
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on port {port}"
