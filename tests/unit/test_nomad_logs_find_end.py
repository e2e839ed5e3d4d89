"""Following a Nomad task's log: find_end learns a log's length from a few small reads; pure."""

from __future__ import annotations

import pytest

from botfleet.orchestrators.nomad.logs import PROBE_BYTES, find_end


@pytest.mark.parametrize(
    "length", [0, 1, PROBE_BYTES - 1, PROBE_BYTES, PROBE_BYTES + 1, 262_144, 30 * (1 << 20) + 7]
)
def test_find_end_learns_a_logs_length_from_a_few_small_reads(length: int) -> None:
    """Nomad's origin=start: a read from `offset` answers the bytes from there to the end."""
    reads: list[int] = []

    def read_from(offset: int, limit: int) -> bytes:
        reads.append(limit)
        return b"x" * min(limit, max(0, length - offset))

    at_least = min(length, 262_144)
    assert find_end(read_from, at_least=at_least) == length
    assert len(reads) <= 30 and max(reads) == PROBE_BYTES
