"""Which backend runs the bots, what users may run on it, and how the bots are fenced in."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from botfleet.manager.core.settings.area import SettingsArea


class OrchestratorSettings(SettingsArea):
    orchestrator: Literal["process", "docker", "nomad", "swarm"] = Field(
        "process", description="Which backend runs the bots."
    )
    allowed_bot_modules: list[str] = Field(
        default_factory=list,
        description="Python modules (and their submodules) whose classes users may run as "
        '`module:Class`, e.g. ["mycompany.bots"]; ["*"] allows any. Built-in bots are always '
        "allowed.",
    )
    allowed_images: list[str] | None = Field(
        None,
        description="Image patterns users may name in `image`, JSON list, e.g. "
        '["registry.internal/bots/*"]: matched on the normalised reference (no tag means '
        '`:latest`, `docker.io/library/x` is `x`), `*` and `?` never cross `/`; `["*"]` '
        "allows any. Unset: the backend's runtime image only (the process backend: none).",
    )
    bot_firewall: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Firewall rules (iptables, owner match) that reset TCP from the bots' uids "
        "to the database's port and BOTFLEET_BOT_BLOCKED_PORTS on this host (manager/"
        "bot_firewall.py). `auto`: installed when the manager is root and iptables works, else "
        "logged; `on`: the manager refuses to start without them; `off`: none.",
    )
    bot_blocked_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list,
        description="Extra TCP ports bots may not open on this host's own addresses, JSON list, "
        "e.g. [4646] (Nomad's API).",
    )
    launch_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A launch that left no workload after this long is retried (a crash "
        "between recording `starting` and reaching the engine).",
    )
    reconcile_interval_s: float = Field(
        5.0, gt=0, description="How often the reconciler compares the database with the engine."
    )
    timer_interval_s: float = Field(
        0.5,
        gt=0,
        le=1.0,
        description="How often the leader fires due timers (`start_at`, `max_duration_s`, restart "
        "backoffs, queue timeouts, schedules, health rules): each fires within about this long "
        "of its time, not on the reconciler's tick.",
    )
    launch_workers: int = Field(16, gt=0, description="Threads that launch and stop workloads.")
