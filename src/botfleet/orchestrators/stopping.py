"""The stop ladder every backend follows: SIGTERM, wait the grace, SIGKILL, wait for the end.

The runtime leaves gracefully on SIGTERM (runtime/runner.py), so the grace is the bot's time
to leave; SIGKILL comes only after it. Backends supply their engine's primitives (`Engine`); the
order, the waiting and what a stop reports live here once. Docker runs the same ladder inside the
engine (`docker stop` with a timeout), so it does not use this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from botfleet.orchestrators.base import WorkloadStatus

POLL_S = 0.2


@dataclass(frozen=True)
class Engine:
    """One workload's stop primitives, as the backend's engine offers them."""

    #: The workload's status now.
    inspect: Callable[[], WorkloadStatus]
    #: Send SIGTERM (or the engine's equivalent); a status when that proved it already gone.
    terminate: Callable[[], WorkloadStatus | None]
    #: Send SIGKILL to whatever is left.
    kill: Callable[[], None]
    #: Wait up to the given seconds for the workload to end; its status then.
    wait_gone: Callable[[float], WorkloadStatus]


def stop_workload(
    engine: Engine, *, grace_s: float, kill_wait_s: float, kill_leftovers: bool = False
) -> WorkloadStatus:
    """Stop one workload and return its final status; a workload already gone is no error.

    `kill_leftovers` sends SIGKILL even when the workload ended within the grace (a process
    group may keep children its leader left behind).
    """
    status = engine.inspect()
    if status.is_gone:
        return status
    final = engine.terminate()
    if final is not None:
        return final
    status = engine.wait_gone(grace_s)
    if status.is_gone and not kill_leftovers:
        return status
    engine.kill()
    if status.is_gone:
        return status
    status = engine.wait_gone(kill_wait_s)
    if not status.is_gone:
        detail = f"still running {kill_wait_s:g}s after SIGKILL"
        return WorkloadStatus(status.state, status.exit_code, detail)
    return status


def poll_until_gone(
    inspect: Callable[[], WorkloadStatus], timeout: float, *, poll_s: float = POLL_S
) -> WorkloadStatus:
    """Inspect until the workload is gone or `timeout` passed; the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = inspect()
        if status.is_gone or time.monotonic() >= deadline:
            return status
        time.sleep(poll_s)
