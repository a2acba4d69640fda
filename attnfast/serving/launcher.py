"""A real ``python -m attnfast.serve`` subprocess on loopback, for the tests and bench/serve_bench.py."""
import os
import re
import subprocess
import sys
import threading
import time

STARTED = re.compile(r"attnfast\.serve: listening on http://127\.0\.0\.1:(\d+)/")


class ServerProcess:
    """``python -m attnfast.serve ARGS --port 0`` on 127.0.0.1, started and waited for (``timeout``
    seconds: loading and warming the model included); ``url`` once it listens. Its output is
    collected (``log``); :meth:`stop` sends SIGTERM (the server drains, then exits) and waits.
    Use it as a context manager to stop it in every case."""

    def __init__(self, *args: str, timeout: float = 180.0):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "attnfast.serve", "--host", "127.0.0.1",
                                      "--port", "0", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._port = threading.Event()
        self.port = None
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._port.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start (exit {self.proc.returncode}):\n{self.log}")
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            match = STARTED.search(line)
            if match:
                self.port = int(match.group(1))
                self._port.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout``); the exit status (-15: ended by SIGTERM
        after the drain, as uvicorn re-raises the signal it handled)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
