"""The Nomad job of one bot attempt, and the names it is found by (Meta keys, the Variable).

JSON jobs: https://developer.hashicorp.com/nomad/api-docs/json-jobs. One batch job, one group,
one task `bot`; Nomad never restarts or reschedules it (botfleet owns restarts). Meta names
botfleet, the fleet, the bot, the user and the attempt, never an environment value. The launch
spec's `secret_env` never enters the job: the backend writes it to the Variable
`nomad/jobs/<job_id>` and the template below renders it into the task's environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from botfleet.orchestrators.base import STATE_MOUNT, LaunchFailed, LaunchSpec, Placement
from botfleet.orchestrators.hardening import Hardening
from botfleet.orchestrators.nomad.config import MHZ_PER_CPU, NomadOrchestratorConfig

#: The task's name inside the job (and in log and signal requests).
TASK = "bot"
#: Where the template renders the secrets, inside the task's secrets dir.
SECRETS_FILE = "secrets/botfleet.env"
_META_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_VAR_PATH = re.compile(r"^[a-zA-Z0-9\-_~/]{1,128}$")  # Nomad's rule for variable paths
_NS = 1_000_000_000
#: Nomad's constraint operators (nomad/structs/structs.go, `Constraint.Validate`): these
#: compare the node's value with a right side...
COMPARING = (
    "=", "==", "is", "!=", "not", "<", "<=", ">", ">=", "regexp", "version", "semver",
    "set_contains", "set_contains_all", "set_contains_any",
)  # fmt: skip
#: ...these take none.
UNARY = ("is_set", "is_not_set")
#: These act among one job's allocations; a bot is a job of one allocation: they would do nothing.
AMONG_ALLOCATIONS = ("distinct_hosts", "distinct_property")
#: A node's value a constraint may test (Nomad's interpolation of node attributes).
_NODE_VALUE = re.compile(
    r"^\$\{(?:attr\.[A-Za-z0-9_.\-]+|meta\.[A-Za-z0-9_.\-]+"
    r"|node\.(?:unique\.id|unique\.name|datacenter|class|pool))\}$"
)


def meta_key(label: str) -> str:
    """The Nomad Meta key of a label: `botfleet.bot_id` -> `botfleet_bot_id` (Meta keys become
    NOMAD_META_* variables, so they keep to letters, digits and underscores)."""
    return _META_UNSAFE.sub("_", label)


def label_of(key: str) -> str:
    """The label a Meta key stands for: botfleet's own under their usual dotted names."""
    if key.startswith("botfleet_label_"):
        return "botfleet.label." + key.removeprefix("botfleet_label_")
    if key.startswith("botfleet_"):
        return "botfleet." + key.removeprefix("botfleet_")
    return key


def labels_of(meta: Mapping[str, str]) -> dict[str, str]:
    return {label_of(k): v for k, v in meta.items()}


def state_volume(slug: str) -> str:
    """The Docker volume holding a state (`StateRef.slug`) on a Nomad client."""
    return f"botfleet-state-{slug}"


def variable_path(job_id: str) -> str:
    return f"nomad/jobs/{job_id}"


def is_valid_variable_path(path: str) -> bool:
    return bool(_VAR_PATH.match(path))


def secrets_template(job_id: str, names: list[str]) -> str:
    """The template that renders the variable's items as KEY=value lines (toJSON quotes them)."""
    lines = [f'{{{{ with nomadVar "{variable_path(job_id)}" }}}}']
    lines += [f"{name}={{{{ .{name} | toJSON }}}}" for name in names]
    lines.append("{{ end }}")
    return "\n".join(lines) + "\n"


def build_job(
    cfg: NomadOrchestratorConfig, spec: LaunchSpec, *, job_id: str, secret_names: Iterable[str]
) -> dict[str, Any]:
    """The JSON job; `secret_names` are kept out of its Env and rendered from the Variable."""
    secret_names = sorted(secret_names)
    policy = cfg.hardening().with_resources(spec.resources)
    meta = {meta_key(k): v for k, v in spec.workload_labels().items()}
    env = {k: v for k, v in spec.env.items() if k not in secret_names}
    task: dict[str, Any] = {
        "Name": TASK,
        "Driver": cfg.driver,
        "Config": _driver_config(cfg, spec, policy),
        "Env": env,
        "Templates": [
            {
                "EmbeddedTmpl": secrets_template(job_id, secret_names),
                "DestPath": SECRETS_FILE,
                "Envvars": True,
                "ChangeMode": "noop",  # the secrets of an attempt never change
                "Perms": "0400",
            }
        ]
        if secret_names
        else [],
        "Resources": _resources(policy),
        "KillSignal": "SIGTERM",  # the runtime leaves on SIGTERM (Nomad's default is SIGINT)
        "KillTimeout": int(cfg.stop_grace_s * _NS),
        # Nomad rotates the task's output itself: count and size from the manager's settings.
        "LogConfig": {
            "MaxFiles": cfg.log_files,
            "MaxFileSizeMB": max(1, cfg.log_file_max_bytes // (1 << 20)),
        },
        "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
    }
    if cfg.driver == "docker":
        task["User"] = policy.user
    return {
        "ID": job_id,
        "Name": job_id,
        "Type": "batch",
        "Namespace": cfg.namespace,
        **({"Region": cfg.region} if cfg.region else {}),
        "Datacenters": _datacenters(cfg, spec.placement),
        **_constraints(spec.placement),
        "Meta": meta,
        "TaskGroups": [
            {
                "Name": TASK,
                "Count": 1,
                # botfleet owns restarts: Nomad neither restarts nor reschedules a bot.
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                # ...nor replaces it when its node goes down while it runs: without this block
                # Replace defaults to true and a lost allocation is replaced whatever the
                # reschedule policy says (nomad/structs/group.go, scheduler/reconciler/
                # filters.go), a second copy of the bot with its one token. One still starting
                # is replaced all the same (status.py: that copy is killed). A client cut off
                # from the servers stops it.
                "Disconnect": {
                    "Replace": False,
                    "StopOnClientAfter": int(cfg.stop_on_client_after_s * _NS),
                },
                "Tasks": [task],
            }
        ],
    }


def parse_constraint(text: str) -> dict[str, str]:
    """`<LTarget> <Operand> <RTarget>` as a Nomad constraint; ValueError saying what is wrong."""
    parts = text.split(None, 2)
    left, operand = [*parts, "", ""][:2]
    right = parts[2].strip() if len(parts) == 3 else ""
    if operand in AMONG_ALLOCATIONS:
        raise ValueError(
            f"constraint {text!r}: {operand} acts among one job's allocations, and each bot is "
            "a Nomad job of its own with one: it would place nothing apart"
        )
    if operand not in COMPARING + UNARY:
        raise ValueError(
            f"constraint {text!r}: write `<LTarget> <Operand> <RTarget>`, e.g. "
            f"`${{attr.kernel.name}} = linux`; operators: {', '.join(COMPARING + UNARY)}"
        )
    if not _NODE_VALUE.match(left):
        raise ValueError(
            f"constraint {text!r}: the left side is a node's value: ${{attr.<name>}}, "
            "${meta.<key>}, ${node.datacenter}, ${node.class}, ${node.pool}, ${node.unique.name}"
            " or ${node.unique.id}"
        )
    if (operand in UNARY) == bool(right):
        needs = "takes no right side" if operand in UNARY else "needs a right side"
        raise ValueError(f"constraint {text!r}: {operand} {needs}")
    if operand == "regexp":
        try:
            re.compile(right)
        except re.error as exc:
            raise ValueError(f"constraint {text!r}: not a regular expression: {exc}") from exc
    return {"LTarget": left, "Operand": operand, "RTarget": right}


def placement_constraints(placement: Placement | None) -> list[dict[str, str]]:
    """The job's Constraints: the bot's expressions, then a `${meta.<key>} = <value>` per node
    label (Nomad's node meta). ValueError for an expression Nomad would refuse or ignore."""
    if placement is None:
        return []
    found = [parse_constraint(text) for text in placement.constraints]
    for key, value in sorted(placement.node_labels.items()):
        found.append({"LTarget": f"${{meta.{key}}}", "Operand": "=", "RTarget": value})
    return found


def _constraints(placement: Placement | None) -> dict[str, Any]:
    """The job's `Constraints` entry (none without any); a placement checked before the bot was
    stored never fails here, one from before a change of backend fails its launch."""
    try:
        found = placement_constraints(placement)
    except ValueError as exc:
        raise LaunchFailed(str(exc), code="job_rejected") from exc
    return {"Constraints": found} if found else {}


def _datacenters(cfg: NomadOrchestratorConfig, placement: Placement | None) -> list[str]:
    """The bot's datacenters when it names some, in place of the configured ones."""
    if placement is not None and placement.datacenters:
        return list(placement.datacenters)
    return list(cfg.datacenters)


def _resources(policy: Hardening) -> dict[str, int]:
    """CPU in Nomad's MHz and memory; Nomad requires both, so the policy's limits are set."""
    cpu = max(1, round((policy.cpus or 1.0) * MHZ_PER_CPU))
    return {"CPU": cpu, "MemoryMB": policy.memory_mb or 0}


def _driver_config(
    cfg: NomadOrchestratorConfig, spec: LaunchSpec, policy: Hardening
) -> dict[str, Any]:
    """The docker driver renders the shared hardening policy; exec tasks run a command. An
    `exec` kind's argv replaces the runtime command: as the exec driver's `command` and `args`,
    or as the docker driver's `entrypoint` (a list; drivers/docker/config.go `Entrypoint`) with
    no `args`, so the image's own entrypoint and command are both set aside."""
    if cfg.driver != "docker":
        argv = list(spec.command) if spec.command is not None else list(cfg.command)
        return {"command": argv[0], "args": argv[1:]}
    mounts: list[dict[str, Any]] = [
        {
            "type": "tmpfs",
            "target": "/tmp",
            "readonly": False,
            "tmpfs_options": {"size": policy.tmpfs_bytes},
        }
    ]
    if spec.state is not None:
        # A Docker named volume on the node the allocation runs on (the driver's `mount`).
        mounts.append(
            {
                "type": "volume",
                "target": STATE_MOUNT,
                "source": state_volume(spec.state.slug),
                "readonly": False,
            }
        )
    config: dict[str, Any] = {
        "image": spec.image or cfg.default_image,
        "init": True,
        "readonly_rootfs": policy.read_only_root,
        "cap_drop": list(policy.cap_drop),
        "mount": mounts,
    }
    if spec.command is not None:
        config["entrypoint"] = list(spec.command)
        config["args"] = []
    if cfg.network_mode:  # host networking is opt-in, never the default
        config["network_mode"] = cfg.network_mode
    if policy.no_new_privileges:
        config["security_opt"] = ["no-new-privileges"]
    if policy.pids_limit:
        config["pids_limit"] = policy.pids_limit
    return config
