"""Fakes for what cannot or need not run in a test: an orchestrator for reconciler and fleet
tests (call counters and failure switches; every real backend is tested against its real engine)
and a DNS resolver with made-up names for the webhook guard's tests.
"""

from __future__ import annotations

import itertools
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from botfleet.orchestrators.base import (
    LABEL_BOT_ID,
    BackendUnavailable,
    LaunchFailed,
    LaunchSpec,
    Orchestrator,
    Workload,
    WorkloadState,
    WorkloadStatus,
)


@dataclass
class FakeWorkload:
    bot_id: str
    labels: dict[str, str]
    status: WorkloadStatus = field(default_factory=lambda: WorkloadStatus(WorkloadState.RUNNING))


class FakeOrchestrator(Orchestrator):
    name = "process"  # stands in for the configured backend

    def __init__(self) -> None:
        self.workloads: dict[str, FakeWorkload] = {}
        self.calls: Counter[str] = Counter()
        self.launch_error: Exception | None = None
        self.unavailable = False  # every call raises BackendUnavailable
        self.inspect_says_not_found = False  # inspect lies "not found" while listing shows it
        self.ignores_stop = False
        # A plain bug (not an engine error) about these: the listing leaves them out, so the
        # reconciler asks `inspect` about each, which raises.
        self.buggy_refs: set[str] = set()
        self.specs: list[LaunchSpec] = []
        self._ids = itertools.count(1)

    def _check(self, call: str) -> None:
        self.calls[call] += 1
        if self.unavailable:
            raise BackendUnavailable("the engine does not answer")

    def launch(self, spec: LaunchSpec) -> str:
        self._check("launch")
        if self.launch_error is not None:
            raise self.launch_error
        ref = f"fake-{next(self._ids)}"
        self.workloads[ref] = FakeWorkload(spec.bot_id, spec.workload_labels())
        self.specs.append(spec)
        return ref

    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        self._check("stop")
        workload = self.workloads.get(runtime_ref)
        if workload is None:
            return WorkloadStatus(WorkloadState.NOT_FOUND)
        if not self.ignores_stop:
            workload.status = WorkloadStatus(WorkloadState.EXITED, exit_code=137)
        return workload.status

    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        self._check("inspect")
        if runtime_ref in self.buggy_refs:
            raise RuntimeError("a bug in a backend")
        workload = self.workloads.get(runtime_ref)
        if workload is None or self.inspect_says_not_found:
            return WorkloadStatus(WorkloadState.NOT_FOUND)
        return workload.status

    def list_workloads(self, labels: Mapping[str, str] | None = None) -> list[Workload]:
        self._check("list")
        wanted = dict(labels or {})
        return [
            Workload(ref, w.bot_id, w.labels, w.status)
            for ref, w in self.workloads.items()
            if ref not in self.buggy_refs and all(w.labels.get(k) == v for k, v in wanted.items())
        ]

    def remove(self, runtime_ref: str) -> None:
        self._check("remove")
        self.workloads.pop(runtime_ref, None)

    # test helpers
    def exit(self, runtime_ref: str, code: int | None) -> None:
        self.workloads[runtime_ref].status = WorkloadStatus(WorkloadState.EXITED, exit_code=code)

    def vanish(self, runtime_ref: str) -> None:
        del self.workloads[runtime_ref]

    def running(self) -> list[str]:
        return [ref for ref, w in self.workloads.items() if w.status.state == WorkloadState.RUNNING]


def launch_failed(code: str) -> LaunchFailed:
    return LaunchFailed(f"engine said no ({code})", code=code)


__all__ = ["LABEL_BOT_ID", "FakeOrchestrator", "launch_failed"]


class FakeDns:
    """`socket.getaddrinfo` with a few made-up names; everything else goes to the real one.
    `answers[name]` is consumed one address per lookup, the last one repeating."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
        self.answers = {name: list(addresses) for name, addresses in answers.items()}
        self.lookups: list[str] = []
        self.real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.lookups.append(name)
        queued = self.answers.get(name)
        if queued is None:
            return self.real(host, port, *args, **kwargs)
        address = queued.pop(0) if len(queued) > 1 else queued[0]
        return self.real(address, port, *args, **kwargs)
