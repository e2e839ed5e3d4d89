"""The queue's arithmetic (lifecycle/queue_order.py): the admission order, which bots fit the
room each limit leaves, positions among competitors, and when a wait begins and runs out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from botfleet.manager.lifecycle.queue_order import (
    Room,
    Waiting,
    admissions,
    in_line_since,
    order_key,
    positions,
    queue_deadline,
)
from botfleet.manager.lifecycle.states import is_allowed

T0 = datetime(2027, 1, 20, 10, 0, tzinfo=UTC)


def bot(
    name: str, *, user: str = "u", priority: int = 0, at: float = 0, labels: tuple = ()
) -> Waiting:
    return Waiting(name, user, priority, T0 + timedelta(seconds=at), frozenset(labels))


def test_higher_priority_first_then_first_come_then_id() -> None:
    queue = [bot("c", at=2), bot("a", at=1), bot("z", priority=5, at=9), bot("b", at=1)]
    assert [w.id for w in sorted(queue, key=order_key)] == ["z", "a", "b", "c"]


@pytest.mark.parametrize(
    ("room", "admitted"),
    [
        (Room(users={"u": 2}), ["hi", "old"]),  # the user's two free slots, in order
        (Room(users={"u": 0}), []),  # a full user admits nothing
        (Room(users={}), []),  # an unknown user has no room
        (Room(users={"u": 9}, fleet=1), ["hi"]),  # the fleet-wide capacity binds first
        (Room(users={"u": 9}, fleet=0), []),  # a capacity of 0 is zero, not unlimited
        # the label `pool:x` is full: its bots wait, the others pass them
        (Room(users={"u": 9}, labels={("pool", "x"): 0}), ["old", "new"]),
        (Room(users={"u": 9}, labels={("pool", "x"): 1}), ["hi", "old", "new"]),
    ],
)
def test_admissions_take_what_fits_in_order(room: Room, admitted: list[str]) -> None:
    queue = [
        bot("new", at=3),
        bot("hi", priority=1, at=5, labels=[("pool", "x")]),
        bot("old", at=1),
        bot("lo", priority=-1, at=0, labels=[("pool", "x")]),
    ]
    assert [w.id for w in admissions(queue, room)] == admitted


def test_one_users_full_limit_never_holds_back_another_user() -> None:
    queue = [bot("a1", user="a", priority=9), bot("a2", user="a", priority=9), bot("b1", user="b")]
    chosen = admissions(queue, Room(users={"a": 1, "b": 1}, fleet=5))
    assert [w.id for w in chosen] == ["a1", "b1"]


def test_room_is_used_up_as_bots_are_taken() -> None:
    room = Room(users={"u": 3}, fleet=2, labels={("k", "v"): 5})
    admissions([bot("a", labels=[("k", "v")]), bot("b", at=1), bot("c", at=2)], room)
    assert (room.users["u"], room.fleet, room.labels[("k", "v")]) == (1, 0, 4)
    assert room.blocker(bot("d")) == "fleet"
    assert Room(users={"u": 1}, labels={("k", "v"): 0}).blocker(bot("e", labels=[("k", "v")])) == (
        "label k:v"
    )


def test_positions_count_only_competitors_ahead() -> None:
    queue = [
        bot("a1", user="a", at=0),
        bot("b1", user="b", at=1),
        bot("a2", user="a", at=2),
        bot("b2", user="b", priority=3, at=9, labels=[("pool", "x")]),
        bot("a3", user="a", at=4, labels=[("pool", "x")]),
    ]
    found = positions(queue, ["a1", "a2", "a3", "b1", "b2"], fleet_capped=False)
    # b2 (priority 3) is first for everyone it competes with: user b, and pool:x (a3)
    assert found == {"b2": 1, "a1": 1, "b1": 2, "a2": 2, "a3": 4}
    # with a fleet-wide capacity every bot competes with every other: the plain rank
    fleet = positions(queue, ["a1", "b1", "a2", "b2", "a3"], fleet_capped=True)
    assert fleet == {"b2": 1, "a1": 2, "b1": 3, "a2": 4, "a3": 5}
    assert positions(queue, ["gone"], fleet_capped=False) == {}


def test_a_scheduled_bot_joins_the_line_at_its_start_and_times_out_from_there() -> None:
    later = T0 + timedelta(hours=1)
    assert in_line_since(T0, None) == T0
    assert in_line_since(T0, T0 - timedelta(hours=1)) == T0
    assert in_line_since(T0, later) == later
    assert queue_deadline(later, 30) == later + timedelta(seconds=30)
    assert queue_deadline(later, None) is None


def test_the_queued_state_in_the_lifecycle() -> None:
    assert is_allowed("queued", "requested") and is_allowed("queued", "completed")
    assert is_allowed("queued", "failed")
    assert not is_allowed("queued", "starting") and not is_allowed("requested", "queued")
    assert not is_allowed("active", "queued")
