"""What a webhook endpoint subscribes to, and the custom headers it may carry: pure rules.

Outbox kinds map to webhook types (`WEBHOOK_TYPES`). An endpoint's `events` is None (every
type) or a list of types, where `bot.transition.<status>` takes only the transitions into that
status; the v1/v2 endpoints keep the types they had (`V2_EVENTS`). A command's events are sent
once it ends (`command.result`); its earlier changes (pending, delivered) reach `GET /events`
only. A label filter matches a bot whose labels include every pair. Custom headers are the
endpoint's own (an API key of the receiver, say): never one that would override what we sign or
how the body is framed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from botfleet.manager.core.errors import ErrorCode, Invalid
from botfleet.manager.core.statuses import BotStatus
from botfleet.manager.schemas.bots import LABEL_KEY, MAX_LABELS

#: The outbox kinds sent as webhooks, and each one's `type`.
WEBHOOK_TYPES = {
    "transition": "bot.transition",
    "report": "bot.report",
    "command": "command.result",
    "queued": "bot.queued",
    "schedule": "schedule.fired",
}
KIND_OF_TYPE = {webhook_type: kind for kind, webhook_type in WEBHOOK_TYPES.items()}
#: What the v1/v2 endpoints (`PUT /webhook`, `PUT /bots/{id}/webhook`) were sent, and still are
#: unless changed (`PATCH /webhooks/{id}`): their receivers were written for these types.
V2_EVENTS = ["bot.transition", "bot.report"]
TRANSITION_TO = "bot.transition."  # + a status: the transitions into it
#: A command's statuses once it has ended: the ones sent as `command.result`.
COMMAND_ENDED = frozenset({"acked", "failed", "expired"})
MAX_EVENT_TYPES = 32
MAX_LABEL_VALUE = 300  # as a bot's label

MAX_HEADERS = 10
MAX_HEADER_NAME = 64
MAX_HEADER_VALUE = 1024
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an RFC 9110 token
HEADER_VALUE = re.compile(r"^[\x20-\x7e]*$")  # visible ASCII and spaces: no CR, LF or NUL
#: Headers we set (signature, body framing, identity) or HTTP itself owns, lowercase.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "user-agent",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
RESERVED_PREFIXES = ("content-", "webhook-", "x-botfleet-", "proxy-")


def statuses() -> list[str]:
    return [status.value for status in BotStatus]


def known_types() -> list[str]:
    """Every value `events` may hold, as documented."""
    return [*WEBHOOK_TYPES.values(), *(TRANSITION_TO + status for status in statuses())]


def check_events(events: Iterable[str]) -> list[str]:
    """The event types, each once, in the order given; 422 `unknown_event_type` otherwise."""
    known = set(known_types())
    checked: list[str] = []
    for event_type in events:
        if event_type not in known:
            raise Invalid(
                ErrorCode.UNKNOWN_EVENT_TYPE,
                f"unknown event type {event_type[:100]!r}: one of {', '.join(known_types())}",
            )
        if event_type not in checked:
            checked.append(event_type)
    if len(checked) > MAX_EVENT_TYPES:
        raise Invalid(ErrorCode.UNKNOWN_EVENT_TYPE, f"at most {MAX_EVENT_TYPES} event types")
    return checked


def kinds_for(events: list[str] | None) -> list[str]:
    """The outbox kinds an endpoint reads, sorted (every kind for None)."""
    if events is None:
        return sorted(WEBHOOK_TYPES)
    kinds = {KIND_OF_TYPE[e] for e in events if e in KIND_OF_TYPE}
    if any(e.startswith(TRANSITION_TO) for e in events):
        kinds.add("transition")
    return sorted(kinds)


def is_sent(kind: str, data: Mapping[str, Any]) -> bool:
    """Whether an outbox event is a webhook at all: a command only once it ended."""
    if kind not in WEBHOOK_TYPES:
        return False
    return kind != "command" or data.get("status") in COMMAND_ENDED


def wants(events: list[str] | None, kind: str, data: Mapping[str, Any]) -> bool:
    """Whether an endpoint subscribed to `events` is sent this outbox event."""
    if not is_sent(kind, data):
        return False
    if events is None or WEBHOOK_TYPES[kind] in events:
        return True
    return kind == "transition" and f"{TRANSITION_TO}{data.get('to')}" in events


def labels_match(label_filter: Mapping[str, str] | None, labels: Mapping[str, Any] | None) -> bool:
    """A bot matches when its labels include every pair of the filter (no filter: every bot)."""
    if not label_filter:
        return True
    have = labels or {}
    return all(have.get(key) == value for key, value in label_filter.items())


def check_label_filter(label_filter: Mapping[str, str]) -> dict[str, str]:
    """The filter as bots' labels are bounded; 422 `invalid_label_filter` otherwise."""
    if len(label_filter) > MAX_LABELS:
        raise Invalid(ErrorCode.INVALID_LABEL_FILTER, f"at most {MAX_LABELS} labels")
    for key, value in label_filter.items():
        if not LABEL_KEY.match(key) or len(value) > MAX_LABEL_VALUE:
            raise Invalid(
                ErrorCode.INVALID_LABEL_FILTER,
                f"label {key[:100]!r}: keys match {LABEL_KEY.pattern}, values have at most "
                f"{MAX_LABEL_VALUE} characters",
            )
    return dict(label_filter)


def is_reserved(name: str) -> bool:
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIXES)


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The custom headers, or 422 `webhook_header_refused` naming the header (never its value:
    a header is often a credential)."""
    if len(headers) > MAX_HEADERS:
        raise Invalid(ErrorCode.WEBHOOK_HEADER_REFUSED, f"at most {MAX_HEADERS} custom headers")
    seen: set[str] = set()
    for name, value in headers.items():
        shown = repr(name[:MAX_HEADER_NAME])
        if not (0 < len(name) <= MAX_HEADER_NAME and HEADER_NAME.match(name)):
            raise Invalid(
                ErrorCode.WEBHOOK_HEADER_REFUSED,
                f"header name {shown} must be 1 to {MAX_HEADER_NAME} token characters",
            )
        if is_reserved(name):
            raise Invalid(
                ErrorCode.WEBHOOK_HEADER_REFUSED,
                f"header {shown} is set by the manager (signature, body or HTTP itself)",
            )
        if name.lower() in seen:
            raise Invalid(ErrorCode.WEBHOOK_HEADER_REFUSED, f"header {shown} is given twice")
        seen.add(name.lower())
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE:
            raise Invalid(
                ErrorCode.WEBHOOK_HEADER_REFUSED,
                f"the value of header {shown} must be text of at most {MAX_HEADER_VALUE} "
                "characters",
            )
        if not HEADER_VALUE.match(value) or value != value.strip():
            raise Invalid(
                ErrorCode.WEBHOOK_HEADER_REFUSED,
                f"the value of header {shown} must be visible ASCII, without line breaks or "
                "spaces around it",
            )
    return dict(headers)


def sendable(headers: Mapping[str, str]) -> dict[str, str]:
    """The custom headers that may go out (a reserved one stored before a rule changed never
    does: ours are set after these anyway)."""
    return {name: value for name, value in headers.items() if not is_reserved(name)}
