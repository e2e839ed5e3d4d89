"""Two test doubles on loopback shared by the API and webhook tests: `Listener` reads a
manager's `GET /events` stream in a thread; `Receiver` is an HTTP server that records the
webhooks POSTed to it (bound to port 0, so its port is the kernel's and never raced)."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.support import wait_until

Event = tuple[int, str, dict[str, Any]]


class Listener:
    """Reads an SSE stream in a thread; events land in a queue."""

    def __init__(self, url: str, token: str, last_event_id: int | None = None) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self._response = self._client.send(
            self._client.build_request("GET", f"{url}/events", headers=headers), stream=True
        )
        assert self._response.status_code == 200
        assert self._response.headers["content-type"].startswith("text/event-stream")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for line in self._response.iter_lines():
                if not line:
                    if "data" in fields:
                        self.events.put(
                            (int(fields["id"]), fields["event"], json.loads(fields["data"]))
                        )
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    fields[name] = value
        except httpx.HTTPError:
            pass

    def until(self, predicate: Any, timeout: float = 30) -> list[Event]:
        seen: list[Event] = []
        while True:
            event = self.events.get(timeout=timeout)
            seen.append(event)
            if predicate(event):
                return seen

    def close(self) -> None:
        # Closing alone leaves the connection open while the reader thread waits in recv(),
        # until the manager's next keep-alive (15 s); a shutdown ends it at once.
        stream = self._response.extensions["network_stream"]
        with contextlib.suppress(OSError):
            stream.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        self._response.close()
        self._client.close()


class Receiver:
    """An HTTP server on 127.0.0.1 recording every POST per path; each path answers the status
    codes queued for it, then 200."""

    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self.answers: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.setdefault(self.path, []).append(
                        {"headers": dict(self.headers.items()), "body": body}
                    )
                    queued = receiver.answers.get(self.path) or []
                    code = queued.pop(0) if queued else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def got(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests.get(path, []))

    def wait_for(self, path: str, count: int, *, timeout: float = 30) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.got(path)) >= count, timeout=timeout, what=f"{count} @ {path}")
        return self.got(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
