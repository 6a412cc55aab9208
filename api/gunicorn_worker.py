"""The gunicorn worker ``streamrank serve`` runs: gthread, with JSON errors and a read timeout.

``gunicorn --worker-class api.gunicorn_worker.ThreadWorker 'api:create_app()'``

Two things gunicorn's own gthread worker does that a production API must not:

- **HTML errors.** Requests gunicorn rejects before the app sees them (414 URI too long, 431
  header fields too large, 400 malformed request line or chunk, 501 transfer coding) are
  answered by ``gunicorn.util.write_error`` with an HTML page. Here they get the API's error
  shape, ``{"error": code, "detail": message}`` with ``Content-Type: application/json``.
- **Stalled clients hold threads forever.** gthread waits (5 s) for the first byte of a
  connection off the thread pool, but once a request has started its socket is blocking with no
  timeout: a client that sends half a header and stops holds a thread until it hangs up, and
  ``workers × threads`` such sockets stop the API for everyone (issue 17: six stalled sockets).
  Here every read or write on a request's socket times out after ``STREAMRANK_READ_TIMEOUT_S``
  (10 s): the connection is closed and the thread serves others. (A client trickling one byte
  under the timeout still holds a thread; the production answer to that is a buffering proxy in
  front, e.g. nginx, which the README's production section mentions.)
"""
from __future__ import annotations

import errno
import json
import os

from gunicorn import util
from gunicorn.workers import gthread

__all__ = ["ThreadWorker", "write_json_error"]

DEFAULT_READ_TIMEOUT_S = 10.0


def _code(reason: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in reason.lower()).split()) or "error"


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error`` (same arguments, same ``Connection: close``) with the API's
    JSON error body."""
    body = json.dumps({"error": _code(reason), "detail": (mesg or reason)[:500]}, ensure_ascii=True).encode()
    head = (f"HTTP/1.1 {int(status_int)} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


# the worker's handle_error calls util.write_error through the module: every error gunicorn writes
# in a process that loaded this worker is JSON
util.write_error = write_json_error


def read_timeout_s() -> float:
    raw = os.environ.get("STREAMRANK_READ_TIMEOUT_S", "")
    try:
        value = float(raw) if raw else DEFAULT_READ_TIMEOUT_S
    except ValueError:
        raise ValueError(f"STREAMRANK_READ_TIMEOUT_S must be a number, got {raw!r}") from None
    return value if value > 0 else DEFAULT_READ_TIMEOUT_S


class _TimedConn(gthread.TConn):
    """A connection whose blocking socket times out (the worker thread sets it blocking, then
    calls :meth:`init` before every request on it)."""

    read_timeout_s = DEFAULT_READ_TIMEOUT_S

    def init(self):
        super().init()
        self.sock.settimeout(self.read_timeout_s)    # still blocking mode, but bounded


class ThreadWorker(gthread.ThreadWorker):
    """gthread with :class:`_TimedConn` connections and JSON errors (module docstring)."""

    def init_process(self):
        _TimedConn.read_timeout_s = read_timeout_s()
        super().init_process()

    def accept(self, listener):
        # gthread.ThreadWorker.accept with our connection class
        try:
            client_sock, client_addr = listener.accept()
            self.nr_conns += 1
            client_sock.setblocking(True)
            conn = _TimedConn(self.cfg, client_sock, client_addr, listener.getsockname())
            self.enqueue_req(conn)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
