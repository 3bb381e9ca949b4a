"""One `codex app-server` child and its JSON-RPC pipes (JSON lines, no "jsonrpc" field).

Non-blocking both ways: what we send waits in a buffer until the pipe takes it, so a
large prompt never blocks the supervisor while the app-server is itself blocked
writing events to us.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codexw.core import process
from codexw.core.codexbin import CodexProgram
from codexw.core.events import MAX_LINE_BYTES, LineSplitter, Skipped, parse_event

Reply = Callable[[dict[str, Any] | None, str | None], None]  # (result, error message)


def _preexec() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    process.set_parent_death_signal(signal.SIGKILL)  # never outlives its supervisor


class AppServer:
    def __init__(self, program: CodexProgram, env: dict[str, str], stderr_log: Path,
                 cwd: str) -> None:
        err = os.open(stderr_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.proc = subprocess.Popen(
                [program.path, "app-server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=err, env=program.environ(env), cwd=cwd, start_new_session=True,
                preexec_fn=_preexec, close_fds=True,
            )
        finally:
            os.close(err)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.out_fd = self.proc.stdout.fileno()
        self.in_fd = self.proc.stdin.fileno()
        os.set_blocking(self.out_fd, False)
        os.set_blocking(self.in_fd, False)
        self.pid = self.proc.pid
        self.started = process.create_time(self.pid)
        self._splitter = LineSplitter(MAX_LINE_BYTES)
        self._outgoing = bytearray()
        self._next_id = 1
        self._pending: dict[int, Reply] = {}
        self.eof = False

    # -- sending ------------------------------------------------------------------------

    def request(self, method: str, params: dict[str, Any], reply: Reply) -> None:
        ident = self._next_id
        self._next_id += 1
        self._pending[ident] = reply
        self._send({"id": ident, "method": method, "params": params})

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self._send({"method": method, **({"params": params} if params is not None else {})})

    def answer(self, ident: Any, result: dict[str, Any]) -> None:
        self._send({"id": ident, "result": result})

    def _send(self, message: dict[str, Any]) -> None:
        self._outgoing += json.dumps(message).encode() + b"\n"
        self.flush()

    def wants_write(self) -> bool:
        return bool(self._outgoing) and not self.eof

    def flush(self) -> None:
        while self._outgoing:
            try:
                written = os.write(self.in_fd, self._outgoing)
            except BlockingIOError:
                return
            except OSError:  # the app-server is gone; reading will say so
                self._outgoing.clear()
                return
            del self._outgoing[:written]

    # -- receiving ----------------------------------------------------------------------

    def read(self) -> list[dict[str, Any]]:
        """The notifications and requests that arrived; replies go to their callbacks."""
        messages: list[dict[str, Any]] = []
        while True:
            try:
                chunk = os.read(self.out_fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                self._fail_pending("the app-server closed its output")
                break
            for line in self._splitter.feed(chunk):
                if isinstance(line, Skipped):
                    continue
                message, _ = parse_event(line)
                if message is not None:
                    messages.extend(self._route(message))
        return messages

    def _route(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        ident = message.get("id")
        if "method" not in message and isinstance(ident, int) and ident in self._pending:
            reply = self._pending.pop(ident)
            error = message.get("error")
            if error is not None:
                text = error.get("message") if isinstance(error, dict) else None
                reply(None, text if isinstance(text, str) else json.dumps(error)[:300])
            else:
                result = message.get("result")
                reply(result if isinstance(result, dict) else {}, None)
            return []
        return [message] if isinstance(message.get("method"), str) else []

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for reply in pending.values():
            reply(None, why)

    # -- stopping -----------------------------------------------------------------------

    def alive(self) -> bool:
        return not self.eof and self.proc.poll() is None

    def shut_down(self, grace: float = 5.0) -> None:
        """Close its input (it exits), then end its group."""
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        process.terminate_group(self.pid, grace, reap=[self.proc])
        self._fail_pending("the app-server was shut down")
