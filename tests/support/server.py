"""An ASGI app behind a real uvicorn on 127.0.0.1, in a thread, for the tests that need
a socket (browsers, HEAD framing)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def listening_socket() -> socket.socket:
    """A socket bound to a free loopback port: its URL is known before the app is built
    (the app's settings need their own base URL)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def serving(app: Any, *, sock: socket.socket | None = None, **config: Any) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL. Closes the socket."""
    sock = sock or listening_socket()
    options = {"log_level": "warning", "access_log": False} | config
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
