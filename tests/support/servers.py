"""Real server processes for tests: free ports, bounded waits, cleanup that always runs.

Used for ``mlflow server`` and ``mlflow models serve``; reusable for soak tests and benchmarks.

Example:
    >>> port = free_port()
    >>> cmd = mlflow_command("models", "serve", "-m", uri, "--env-manager", "local",
    ...                      "-h", "127.0.0.1", "-p", str(port))
    >>> with ServerProcess(cmd, f"http://127.0.0.1:{port}/ping", log_path=tmp / "serve.log") as s:
    ...     requests.post(s.url("/invocations"), json={"inputs": [[1.0, 2.0]]})
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

# Python's own bin folder: `mlflow models serve` runs `uvicorn` by name, so that folder must be on
# PATH even when the venv is not activated (e.g. `.venv/bin/python -m pytest`).
VENV_BIN = os.path.dirname(sys.executable)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**extra):
    """``os.environ`` with this interpreter's bin folder first on PATH, plus ``extra`` variables."""
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def mlflow_command(*args):
    """``[python, -m, mlflow, *args]`` with this interpreter (no reliance on PATH for MLflow)."""
    return [sys.executable, "-m", "mlflow", *args]


def wait_for_http(url, timeout=60.0, process=None, log_path=None):
    """Polls ``url`` until it answers 200; raises ``TimeoutError`` after ``timeout`` seconds.

    Fails at once if ``process`` exits first, with the end of ``log_path`` in the message.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"The server exited with status {process.returncode} before {url} answered.\n"
                f"{log_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            last_error = e
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s ({last_error}).\n{log_tail(log_path)}")


def log_tail(log_path, chars=4000):
    """The last ``chars`` characters of a log file ('' if there is none)."""
    if not log_path or not os.path.exists(log_path):
        return ""
    with open(log_path, errors="replace") as f:
        return "--- server log (end) ---\n" + f.read()[-chars:]


class ServerProcess:
    """A server started in its own process group, stopped (group and all) on exit.

    ``mlflow server`` and ``mlflow models serve`` start worker processes (gunicorn/uvicorn);
    signalling the whole group stops them too, and nothing else on the machine.

    Args:
        command: the argv list.
        ready_url: polled until it answers 200 (see :func:`wait_for_http`).
        log_path: where stdout and stderr go (shown when the start fails).
        env: the environment (default :func:`server_env`).
        timeout: seconds to wait for ``ready_url`` (MLflow imports alone take 20 s on a busy
            2-core machine).
        cwd: working folder of the process.
    """

    def __init__(self, command, ready_url, log_path, env=None, timeout=180.0, cwd=None):
        self.command = command
        self.ready_url = ready_url
        self.log_path = os.fspath(log_path)
        self.env = env if env is not None else server_env()
        self.timeout = timeout
        self.cwd = cwd
        self.process = None
        scheme, _, host = ready_url.split("/", 3)[:3]
        self.base_url = f"{scheme}//{host}"

    def url(self, path=""):
        """``http://host:port`` + ``path``."""
        return self.base_url + path

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        try:
            wait_for_http(self.ready_url, self.timeout, self.process, self.log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def stop(self, grace=10.0):
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds; idempotent."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                # The leader is gone; workers it left in the group still get the signal above.
                _kill_group_leftovers(self.process.pid)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _kill_group_leftovers(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
