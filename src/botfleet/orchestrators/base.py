"""The contract every orchestrator backend implements.

The manager sees bots' workloads only through this interface. A backend launches a workload from
a `LaunchSpec`, stops it, and reports on it with one health vocabulary (`WorkloadState`), so the
reconciler never needs to know which engine is underneath.

Two failures must never be confused (lesson paid for by peers whose reapers killed healthy bots):
`WorkloadNotFound` means the engine positively says the workload is gone; `BackendUnavailable`
means the engine could not be asked. Never turn the second into the first.
"""

from __future__ import annotations

import abc
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from botfleet.orchestrators.config import BackendConfig, ManagerSettings

#: Labels every backend attaches to a workload so it can be listed and traced back to its record.
LABEL_MANAGED = "botfleet.managed"
#: The installation a workload belongs to: several fleets may share one engine.
LABEL_FLEET = "botfleet.fleet"
LABEL_BOT_ID = "botfleet.bot_id"
LABEL_USER_ID = "botfleet.user_id"
LABEL_ATTEMPT = "botfleet.attempt"

#: Where the engines that run containers (docker, nomad's docker driver) mount a bot's state
#: volume: its BOTFLEET_STATE_DIR.
STATE_MOUNT = "/state"


class OrchestratorError(Exception):
    """Base class of the errors a backend raises; `code` is a stable snake_case reason."""

    code = "orchestrator_error"


class LaunchFailed(OrchestratorError):
    """The engine refused to start the workload (bad image, bad entrypoint, no resources)."""

    def __init__(self, message: str, *, code: str = "launch_failed") -> None:
        super().__init__(message)
        self.code = code


class KindEnvFailed(LaunchFailed):
    """A kind's virtualenv could not be built (pip failed, timed out, or the env is too big);
    `output_tail` is the end of pip's output, which says why (its last lines are in the
    message too)."""

    def __init__(self, message: str, *, output_tail: str = "") -> None:
        last = output_tail[-800:]
        super().__init__(f"{message}:\n{last}" if last else message, code="kind_env_failed")
        self.output_tail = output_tail


class WorkloadNotFound(OrchestratorError):
    """The engine positively reports that this workload does not exist (any more)."""

    code = "workload_not_found"


class BackendUnavailable(OrchestratorError):
    """The engine could not be reached or did not answer: nothing is known about the workload."""

    code = "backend_unavailable"


class CapabilityNotSupported(OrchestratorError):
    """The backend cannot do this at all; the message says what to use instead."""

    code = "not_supported"


class PlacementUnsupported(OrchestratorError):
    """The backend cannot honour this placement (POST /bots answers 422 with this code): the
    message says what it can do instead."""

    code = "placement_unsupported"


@dataclass(frozen=True)
class StateRef:
    """A persistent state directory: one per user and `state_key`, kept across the attempts
    and relaunches of the bots that name it (one live bot at a time, the manager sees to it)."""

    user_id: str
    key: str

    @property
    def slug(self) -> str:
        """A name for the directory or volume: the same for the same user and key, never the
        same for two users, and no user text in a path or an engine's object name."""
        return hashlib.sha256(f"{self.user_id}\0{self.key}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Resources:
    """One bot's CPU and memory (its own `resources` over its kind's, field by field), in
    place of the backend's per-bot defaults; None keeps that default."""

    cpu: float | None = None  # CPUs
    memory_mb: int | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> Resources | None:
        if not data or (data.get("cpu") is None and data.get("memory_mb") is None):
            return None
        cpu, memory = data.get("cpu"), data.get("memory_mb")
        return cls(float(cpu) if cpu is not None else None, int(memory) if memory else None)


@dataclass(frozen=True)
class Placement:
    """Where one bot may run (CONTRACT v3 `placement`): engine constraint expressions, as the
    engine words them (`node.labels.zone==a` on swarm, `${attr.kernel.name} = linux` on nomad),
    and node labels every eligible node must carry. Backends that place nothing refuse a
    non-empty one before the bot is stored (`Orchestrator.check_placement`)."""

    constraints: tuple[str, ...] = ()
    node_labels: Mapping[str, str] = field(default_factory=dict)
    #: Nomad's datacenters (globs), in place of the backend's configured ones; nomad only.
    datacenters: tuple[str, ...] = ()

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> Placement | None:
        if not data or not any(data.get(k) for k in ("constraints", "node_labels", "datacenters")):
            return None
        return cls(
            tuple(data.get("constraints") or ()),
            dict(data.get("node_labels") or {}),
            tuple(data.get("datacenters") or ()),
        )


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs to start one bot attempt.

    Frozen and passed whole, so that adding a field never breaks a backend's signature.
    `env` and `secret_env` are the runtime environment as `botfleet.runtime.env.RuntimeEnv.render`
    splits it, so no backend guesses which variables are secret: `secret_env` (the bot token, its
    secrets) goes where only the workload reads it (a Nomad Variable; the container's or process's
    environment), never into labels, metadata, logs or a command line. Resource limits and
    hardening are the operator's, from each backend's settings (`botfleet.orchestrators.hardening`).
    """

    bot_id: str
    user_id: str
    attempt: int
    image: str | None
    env: Mapping[str, str]
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    labels: Mapping[str, str] = field(default_factory=dict)
    fleet: str = ""
    #: The bot's persistent directory, mounted or made where `Orchestrator.state_dir` said.
    state: StateRef | None = None
    #: An `exec` kind's argv, run instead of the backend's runtime command with the same
    #: environment and isolation; None: the backend's runtime command.
    command: tuple[str, ...] | None = None
    #: The interpreter to run `-m botfleet.runtime` with (a kind's own virtualenv on the process
    #: backend); None: the backend's own.
    python: str | None = None
    #: Its CPU and memory (its own over its kind's) in place of the backend's per-bot defaults;
    #: None: the defaults.
    resources: Resources | None = None
    #: Where the engine may place it (the bot's, else its kind's); None: anywhere.
    placement: Placement | None = None

    def environment(self) -> dict[str, str]:
        """The whole environment, for engines that hand both parts to the workload alike."""
        return {**self.env, **self.secret_env}

    def workload_labels(self) -> dict[str, str]:
        """User labels plus the botfleet labels that identify the workload (ours win)."""
        return {
            **{f"botfleet.label.{k}": v for k, v in self.labels.items()},
            LABEL_MANAGED: "true",
            LABEL_FLEET: self.fleet,
            LABEL_BOT_ID: self.bot_id,
            LABEL_USER_ID: self.user_id,
            LABEL_ATTEMPT: str(self.attempt),
        }


class WorkloadState(enum.StrEnum):
    """One health vocabulary for all engines."""

    PENDING = "pending"  # accepted by the engine, not running yet
    RUNNING = "running"
    EXITED = "exited"  # finished; `exit_code` says how, when the engine knows
    NOT_FOUND = "not_found"  # the engine positively has no such workload
    UNKNOWN = "unknown"  # the engine answered, but in a way we cannot map


@dataclass(frozen=True)
class WorkloadStatus:
    """What the engine says about one workload right now."""

    state: WorkloadState
    exit_code: int | None = None
    detail: str = ""
    #: A failure the engine itself diagnosed for an ended workload (`out_of_memory`), which the
    #: lifecycle records as the bot's reason; None: the exit code tells.
    reason: str | None = None

    @property
    def is_gone(self) -> bool:
        """True only on positive proof that nothing runs any more."""
        return self.state in (WorkloadState.EXITED, WorkloadState.NOT_FOUND)


@dataclass(frozen=True)
class Workload:
    """One workload as seen in a listing: its reference, its labels and its status."""

    runtime_ref: str
    bot_id: str
    labels: Mapping[str, str]
    status: WorkloadStatus


class LogFollower(abc.ABC):
    """Reads a workload's output as it grows. Each `read` is short, non-blocking I/O (the
    manager calls it from a worker thread, then sleeps on the event loop when it got nothing)."""

    @abc.abstractmethod
    def read(self) -> bytes:
        """What was written since the last read (the tail first), at most a few blocks; b""
        when nothing new."""

    def close(self) -> None:  # noqa: B027 - most followers hold nothing
        """Release what the follower holds."""


class TailFirstFollower(LogFollower):
    """What every backend's follower does: its first read answers the tail it was opened with
    (plus a newline), every later read what the workload wrote since (`read_new`)."""

    def __init__(self, tail: bytes | str) -> None:
        first = tail.encode() if isinstance(tail, str) else tail
        self._first: bytes | None = first + b"\n" if first else b""

    def read(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            if first:
                return first
        return self.read_new()

    @abc.abstractmethod
    def read_new(self) -> bytes:
        """What was written since the last read, at most a few blocks; b"" when nothing new."""


class Orchestrator(abc.ABC):
    """A backend that runs one workload per bot attempt.

    `runtime_ref` is the backend's own handle (a pid, a container id, a job id) as a string; the
    manager stores it on the bot and hands it back unchanged. Methods are synchronous because the
    engines' SDKs are; the manager calls them from worker threads, never from the event loop.
    """

    #: The name used in settings (`BOTFLEET_ORCHESTRATOR`) and stored on each bot.
    name: ClassVar[str]
    #: The backend's settings model (`BOTFLEET_<BACKEND>_*`); its field descriptions document them.
    config_class: ClassVar[type[BackendConfig]]
    #: Whether kinds with a `package` run in a virtualenv this backend builds (`kind_python`,
    #: `build_kind_env`); False: the package is the image's business.
    builds_kind_envs: ClassVar[bool] = False

    @classmethod
    def from_settings(cls, settings: ManagerSettings) -> Self:
        """The backend built from its own settings plus the budgets the manager owns."""
        return cls(cls.config_class.from_manager(settings))  # type: ignore[call-arg]

    @abc.abstractmethod
    def launch(self, spec: LaunchSpec) -> str:
        """Start the workload; return its runtime_ref. Raises LaunchFailed or BackendUnavailable."""

    @abc.abstractmethod
    def stop(self, runtime_ref: str, *, grace_s: float) -> WorkloadStatus:
        """Ask the workload to end (SIGTERM or equivalent), kill it after `grace_s`.

        Returns the final status. Stopping a workload that is already gone is not an error.
        """

    @abc.abstractmethod
    def inspect(self, runtime_ref: str) -> WorkloadStatus:
        """The workload's current status. Raises BackendUnavailable if the engine cannot tell."""

    @abc.abstractmethod
    def list_workloads(self, labels: Mapping[str, str] | None = None) -> list[Workload]:
        """Every botfleet workload the engine knows (matching `labels`), live or exited."""

    def check_placement(self, placement: Placement) -> None:
        """Raise PlacementUnsupported unless this backend can honour `placement` (checked before
        a bot is stored, so a request it cannot honour is a 422, never a failed launch). Engines
        without nodes to choose from honour none."""
        raise PlacementUnsupported(
            f"the {self.name} backend runs every bot on the manager's own machine and cannot "
            "place bots; placement needs the swarm or nomad backend"
        )

    def kind_python(self, name: str, version: int, package: Mapping[str, Any]) -> str | None:
        """The interpreter of the kind's virtualenv if it is built and ready now, else None.
        Cheap and non-blocking: the manager asks it under a bot's row lock."""
        return None

    def build_kind_env(self, name: str, version: int, package: Mapping[str, Any]) -> str:
        """Build (or reuse) the kind's virtualenv and return its interpreter; blocks for as long
        as the build takes (bounded by the backend). Raises KindEnvFailed."""
        raise CapabilityNotSupported(f"the {self.name} backend builds no kind environments")

    def remove(self, runtime_ref: str) -> None:  # noqa: B027 - optional capability
        """Forget an ended workload once its exit code and logs are recorded (no-op by default)."""

    @property
    def runtime_image(self) -> str | None:
        """The image bots run when their request names none; None for a backend that runs no
        images. The manager allows users this image, and only it, unless the operator lists
        others (BOTFLEET_ALLOWED_IMAGES)."""
        return None

    def state_dir(self, state: StateRef) -> str:
        """Where the workload sees its persistent directory (`BOTFLEET_STATE_DIR`); the launch
        of a spec with this `state` makes it exist, writable by the workload alone."""
        raise CapabilityNotSupported(f"the {self.name} backend keeps no bot state")

    def purge_state(self, state: StateRef) -> None:
        """Delete a persistent directory and what it holds (DELETE /bots/{id}?purge_state=1);
        deleting one that does not exist is not an error."""
        raise CapabilityNotSupported(f"the {self.name} backend keeps no bot state")

    @property
    def supports_logs(self) -> bool:
        return False

    def logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> str:
        """The workload's most recent output lines, capped by `orchestrators/log_tail.py`
        (bytes in all and per line): the cost is the answer's size, never the log's."""
        raise CapabilityNotSupported(
            f"the {self.name} backend keeps no logs; read them from the engine itself"
        )

    def follow_logs(self, runtime_ref: str, *, bot_id: str, tail: int) -> LogFollower:
        """A reader of the workload's output as it is written, starting with the last `tail`
        lines; `supports_logs` backends that cannot follow raise CapabilityNotSupported."""
        raise CapabilityNotSupported(f"the {self.name} backend cannot follow logs")

    def rotate_logs(self) -> None:  # noqa: B027 - engines that rotate logs themselves
        """Keep each bot's log files within the configured size and count (housekeeping)."""

    def delete_logs(self, bot_id: str) -> None:  # noqa: B027 - engines that keep none
        """Forget every log file of a bot whose record is deleted (no-op by default)."""

    def containment(self) -> dict[str, str]:
        """What fences each bot in on this engine, as stable codes (for /readyz); {}: the
        engine's own, not described here."""
        return {}

    def check_health(self) -> None:  # noqa: B027 - most engines have nothing to check
        """Raise BackendUnavailable if the engine cannot be used now (for /readyz)."""

    def close(self) -> None:  # noqa: B027
        """Release clients and threads on manager shutdown; workloads keep running."""
