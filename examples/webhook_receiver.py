#!/usr/bin/env python3
"""A botfleet webhook receiver for trying webhooks on your own machine: the standard library
only, on 127.0.0.1. It checks each request's signature and prints the events it accepts.

    python3 examples/webhook_receiver.py --secret whsec_... [--port 8000]

The secret is the `secret` that `PUT /webhook` answered when the endpoint was created (or
`POST /webhook/rotate-secret`); WEBHOOK_SECRET in the environment works too. A manager refuses
a receiver on loopback unless it runs with BOTFLEET_WEBHOOK_ALLOW_PRIVATE=true: see
docs/how-to/webhooks.md. `--port 0` picks a free port; the first line printed names it.

Deliveries are signed the Standard Webhooks way (https://www.standardwebhooks.com): headers
`webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`, a space-separated list
of `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed with the secret's bytes (the
base64 after `whsec_`). A request is accepted (204) when one signature matches the exact body
bytes and the timestamp is within five minutes; anything else gets 401 and is not printed. A
delivery can arrive twice (a retry whose first answer was lost): its `webhook-id` is the same,
and the repeat is answered 204 without being printed again.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import sys
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 300  # a timestamp further than this from now is refused: a replay
MAX_BODY = 1 << 20  # the manager's envelopes are far smaller
REMEMBERED_IDS = 10_000  # the `webhook-id`s kept to drop repeats


class Refused(Exception):
    """The request was not signed with our secret, or too long ago."""


def signing_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise SystemExit("the secret must be the whsec_… value the manager showed") from None


def verify(key: bytes, headers: dict[str, str], body: bytes, *, now: float) -> str:
    """The delivery's `webhook-id` when one of its signatures matches; raises Refused."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    offered = headers.get("webhook-signature", "").split()
    if not msg_id or not timestamp.isdigit() or not offered:
        raise Refused("missing webhook-id, webhook-timestamp or webhook-signature")
    if abs(now - int(timestamp)) > TOLERANCE_S:
        raise Refused("timestamp too far from now (a replay?)")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise Refused("no signature matches")
    return msg_id


def make_handler(key: bytes) -> type[BaseHTTPRequestHandler]:
    seen: OrderedDict[str, None] = OrderedDict()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                return self.answer(413)
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                msg_id = verify(key, headers, body, now=time.time())
            except Refused as exc:
                print(f"refused a request to {self.path}: {exc}", file=sys.stderr, flush=True)
                return self.answer(401)
            if msg_id in seen:
                return self.answer(204)  # a repeat of a delivery already printed
            seen[msg_id] = None
            if len(seen) > REMEMBERED_IDS:
                seen.popitem(last=False)
            event = json.loads(body)
            data = json.dumps(event.get("data"), sort_keys=True)
            print(f"{event.get('type')} {msg_id} {event.get('timestamp')} {data}", flush=True)
            return self.answer(204)

        def answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass  # one line per event is printed above; no access log

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET"), help="whsec_…")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args()
    if not args.secret:
        parser.error("give the endpoint's signing secret: --secret whsec_… or WEBHOOK_SECRET")
    server = ThreadingHTTPServer((args.host, args.port), make_handler(signing_key(args.secret)))
    print(f"listening on http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
