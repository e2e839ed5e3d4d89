"""The CLI's parsers: the event stream's SSE parser on chunks split anywhere, `key=value` pairs,
the lines a log follow has not shown yet; pure."""

from __future__ import annotations

import json

from botfleet.cli.commands.bots import new_lines, parse_pairs
from botfleet.cli.sse import SSEParser


def test_sse_parser_handles_chunks_comments_and_multiple_events() -> None:
    stream = (
        b": keep-alive\n\n"
        b'id: 7\nevent: transition\ndata: {"bot_id": "b1", "from": "starting", "to": "active"}\n\n'
        b'id: 8\r\nevent: command\r\ndata: {"bot_id": "b1", "status": "acked"}\r\n\r\n'
        b": ping\n"
        b'id: 9\nevent: transition\ndata: {"to": "\xc3\xa9"}\n\n'  # split UTF-8 too
    )
    for size in (len(stream), 1, 5, 13):  # one chunk, and chunks split anywhere
        parser = SSEParser()
        events = [e for i in range(0, len(stream), size) for e in parser.feed(stream[i : i + size])]
        assert [(e.id, e.event) for e in events] == [
            ("7", "transition"),
            ("8", "command"),
            ("9", "transition"),
        ]
        assert json.loads(events[0].data)["to"] == "active"
        assert json.loads(events[1].data)["status"] == "acked"
        assert json.loads(events[2].data) == {"to": "é"}
        assert parser.last_id == "9"


def test_value_parsing_and_log_following() -> None:
    assert parse_pairs(["n=3", "flag=true", "lang=de", 'x={"a": 1}', "eq=a=b"], typed=True) == {
        "n": 3,
        "flag": True,
        "lang": "de",
        "x": {"a": 1},
        "eq": "a=b",
    }
    assert parse_pairs(["n=3"], typed=False) == {"n": "3"}
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines([], ["a"]) == ["a"]
