"""One side of a model in a process of its own: ``python -m fgirewrite.verify.side IN OUT``.

``fgirewrite verify --entry`` starts two: one imports the project as written, the other as
rewritten (``fgirewrite.execute.load.load_side``), so no module object is shared. Each answers
requests (pickled ``(operation, arguments)`` on the pipe ``IN``; ``("ok", value)`` or
``("error", message, traceback)`` on ``OUT``) and builds its model afresh from the entry for
each of them: a model that has run is never copied.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import tempfile
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class SideError(Exception):
    """The side's process could not answer (it ended, or did not answer in time)."""


class CheckError(Exception):
    """The side answered with an error: the model (or the entry) raised."""

    def __init__(self, message: str, trace: str):
        super().__init__(message)
        self.trace = trace


class SideProcess:
    """The parent's end of one side: send requests, receive answers."""

    def __init__(self, variant: str, timeout: float, threads: int):
        self.variant = variant
        self.timeout = timeout
        to_child, from_parent = os.pipe()
        from_child, to_parent = os.pipe()
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env["OMP_NUM_THREADS"] = str(threads)
        command = [sys.executable, "-m", "fgirewrite.verify.side", str(to_child), str(to_parent)]
        self.process = subprocess.Popen(
            command,
            pass_fds=(to_child, to_parent),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            env=env,
        )
        os.close(to_child)
        os.close(to_parent)
        self.outbox = Connection(from_parent, readable=False)
        self.inbox = Connection(from_child, writable=False)

    def send(self, operation: str, **arguments: Any) -> None:
        try:
            self.outbox.send_bytes(pickle.dumps((operation, arguments)))
        except OSError:
            pass  # the process ended: receive says how

    def receive(self, what: str) -> Any:
        """The answer to the last request; ``CheckError`` if the model raised."""
        try:
            ready = self.inbox.poll(self.timeout)
            if not ready:
                self.process.kill()
                raise SideError(
                    f"the {self.variant} model did not answer within {self.timeout:.0f} s ({what})"
                )
            status, *rest = pickle.loads(self.inbox.recv_bytes())
        except (EOFError, OSError):
            raise SideError(self._ended(what)) from None
        if status == "error":
            raise CheckError(*rest)
        return rest[0]

    def call(self, operation: str, **arguments: Any) -> Any:
        self.send(operation, **arguments)
        return self.receive(operation)

    def _ended(self, what: str) -> str:
        code = self.process.wait()
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else "no output"
        return f"the {self.variant} model's process ended (exit {code}) during {what}: {last}"

    def close(self) -> None:
        self.send("exit")
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.outbox.close()
        self.inbox.close()
        self.log.close()


def _rewriter(spec: str | None):
    """``FILE:FUNCTION`` standing in for ``rewrite_source`` (tests break the rewrite with it)."""
    if spec is None:
        return None
    path, _, name = spec.rpartition(":")
    loaded = importlib.util.spec_from_file_location("_fgirewrite_rewriter", path)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return getattr(module, name)


def main(argv: list[str]) -> int:
    inbox = Connection(int(argv[1]), writable=False)
    outbox = Connection(int(argv[2]), readable=False)
    from fgirewrite.source import described
    from fgirewrite.verify import model_side

    worker = model_side.Worker(_rewriter)
    while True:
        try:
            operation, arguments = pickle.loads(inbox.recv_bytes())
        except EOFError:
            return 0
        if operation == "exit":
            return 0
        try:
            reply: tuple = ("ok", getattr(worker, operation)(**arguments))
        except BaseException as exc:  # noqa: BLE001 - whatever the model raises is reported
            reply = ("error", described(exc), traceback.format_exc(limit=-8))
        try:
            data = pickle.dumps(reply)
        except Exception as exc:  # noqa: BLE001 - an answer that cannot cross the pipe
            data = pickle.dumps(("error", f"cannot send the answer: {described(exc)}", ""))
        outbox.send_bytes(data)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
