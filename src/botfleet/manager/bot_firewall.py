"""Keep host-networked bots off the database: owner-matched iptables rules for the bots' uids.

Why: process bots and docker bots on the `host` network share the host's network namespace, so
nothing but a firewall stops a bot's TCP connect to a PostgreSQL listening on 127.0.0.1. Bots run
under their own uids (the docker backend's `BOTFLEET_DOCKER_USER`, the process backend's uid
range), and the `owner` match sees that uid on every locally generated packet: a REJECT with a
TCP reset for those uids makes their connect() fail at once while the manager's works.

The rules live in a dedicated chain, `BOTFLEET-BOTS`, jumped to from the top of OUTPUT. Several
managers may share one host (the test suite runs many): every rule is checked (`-C`) before it
is added (`-A`), under a host-wide file lock, so the same rule added twice is one rule; nothing is
ever flushed, and nothing is removed on shutdown (another manager may rely on it). To remove them
by hand: `iptables -D OUTPUT -j BOTFLEET-BOTS; iptables -F BOTFLEET-BOTS; iptables -X
BOTFLEET-BOTS` (and the same with ip6tables).

`BOTFLEET_BOT_FIREWALL`: `auto` installs when possible and logs why not; `on` refuses to start
when it cannot; `off` does nothing.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from botfleet.manager.core.settings import Settings
from botfleet.orchestrators import backend_class

log = logging.getLogger(__name__)

CHAIN = "BOTFLEET-BOTS"
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
_LOCK_NAME = "botfleet-firewall.lock"
_TIMEOUT_S = 20

Family = Literal[4, 6]
_BINARY: dict[Family, str] = {4: "iptables", 6: "ip6tables"}


class FirewallUnavailable(Exception):
    """The rules cannot be installed here (not root, no iptables, no uid to match...)."""


class FirewallNotNeeded(Exception):
    """Nothing to protect: bots are not on this host's network, or no database port to guard."""


class FirewallError(RuntimeError):
    """BOTFLEET_BOT_FIREWALL=on and the rules could not be installed: the manager must not start."""


@dataclass(frozen=True)
class Rule:
    """Reset TCP from `uids` to `port` on `destination` (None: every address of this host)."""

    family: Family
    port: int
    uids: str
    destination: str | None = None

    def spec(self) -> list[str]:
        where = (
            ["-d", self.destination]
            if self.destination
            else ["-m", "addrtype", "--dst-type", "LOCAL"]
        )
        return [
            "-p", "tcp", *where, "--dport", str(self.port),
            "-m", "owner", "--uid-owner", self.uids,
            "-j", "REJECT", "--reject-with", "tcp-reset",
        ]  # fmt: skip

    def describe(self) -> str:
        where = self.destination or ("this host" if self.family == 4 else "this host (IPv6)")
        return f"uid {self.uids} -> tcp {where}:{self.port}"


def bot_uids(settings: Settings) -> str:
    """The uid (or `lo-hi` range) the configured backend runs bots under on this host."""
    config = backend_class(settings.orchestrator).config_class.from_manager(settings)
    if settings.orchestrator == "nomad":
        raise FirewallNotNeeded("nomad bots run on the Nomad clients, not on this host")
    if settings.orchestrator == "swarm":  # guards the bots this host runs as a swarm node
        if "host" not in getattr(config, "networks", ["host"]):
            raise FirewallNotNeeded("swarm bots join swarm networks, not the host's")
        return str(getattr(config, "user", "")).split(":")[0]  # numeric: the setting checks it
    if settings.orchestrator == "docker":
        network = str(getattr(config, "network", "host"))
        if network != "host":
            raise FirewallNotNeeded(
                f"docker bots join the network {network!r}, not the host's; keep the database "
                "off that network"
            )
        uid = str(getattr(config, "user", "")).split(":")[0]
        if not uid.isdigit():
            raise FirewallUnavailable(
                f"BOTFLEET_DOCKER_USER={uid!r} is not a numeric uid; the rule matches uids"
            )
        return uid
    base, count = getattr(config, "uid_base", None), getattr(config, "uid_count", None)
    if not isinstance(base, int) or not isinstance(count, int) or count < 1:
        raise FirewallUnavailable(
            "the process backend runs bots as the manager's own user: no uid to filter"
        )
    return f"{base}-{base + count - 1}" if count > 1 else str(base)


def guarded_ports(settings: Settings) -> list[tuple[int, str | None]]:
    """(port, destination) pairs bots may not reach: the database's, then the extra ports."""
    guarded: list[tuple[int, str | None]] = []
    url = make_url(settings.resolved_database_url())
    backend = url.get_backend_name()
    if backend in _DEFAULT_PORTS and url.host and not url.host.startswith("/"):
        port = url.port or _DEFAULT_PORTS[backend]
        for address in _addresses(url.host):
            if address.is_loopback:
                guarded.append((port, None))
            elif address.is_private or address.is_link_local:
                guarded.append((port, str(address)))
            else:
                log.info("bot firewall: the database at %s is public; not filtered", address)
    guarded += [(port, None) for port in settings.bot_blocked_ports]
    return list(dict.fromkeys(guarded))


def plan(settings: Settings) -> list[Rule]:
    """Every rule this manager needs, both address families where they apply."""
    uids = bot_uids(settings)
    rules: list[Rule] = []
    for port, destination in guarded_ports(settings):
        if destination is None:
            rules += [Rule(4, port, uids), Rule(6, port, uids)]
        else:
            family: Family = 6 if ":" in destination else 4
            rules.append(Rule(family, port, uids, destination))
    if not rules:
        raise FirewallNotNeeded("no database port on this host and no BOTFLEET_BOT_BLOCKED_PORTS")
    return rules


def install(rules: list[Rule]) -> list[Rule]:
    """Add the rules that are missing (check first, under the host-wide lock); return them all.

    IPv6 is best effort: a host without ip6tables keeps its IPv4 rules (logged).
    """
    if os.geteuid() != 0:
        raise FirewallUnavailable("the manager does not run as root")
    if shutil.which(_BINARY[4]) is None:
        raise FirewallUnavailable("iptables is not installed")
    installed: list[Rule] = []
    with _host_lock():
        for family in (4, 6):
            wanted = [rule for rule in rules if rule.family == family]
            if not wanted:
                continue
            try:
                _ensure_chain(family)
                for rule in wanted:
                    if not _run(family, "-C", CHAIN, *rule.spec(), check=False):
                        _run(family, "-A", CHAIN, *rule.spec())
                    installed.append(rule)
            except FirewallUnavailable as exc:
                if family == 4:
                    raise
                log.warning("bot firewall: no IPv6 rules (%s)", exc)
    return installed


def needed_ports(settings: Settings) -> set[int]:
    """Ports this manager's bots must reach: its own API (callbacks) and the bots' Redis."""
    ports = {settings.port}
    for url in (settings.resolved_callback_url(), settings.bot_redis_url or settings.redis_url):
        try:
            port = urlsplit(url).port if url else None
        except ValueError:
            port = None
        if port:
            ports.add(port)
    return ports


def release(ports: set[int]) -> list[str]:
    """Delete the chain's rules that reset one of `ports`; return them as iptables printed them.

    Rules outlive their managers (by design: they are shared). A rule for a port this manager
    listens on (its API) or its bots' Redis listens on can only be stale — the database it
    guarded listened there once, and a port has one listener — and it would cut this manager's
    bots off their callbacks. Seen in the test suite, where databases behind short-lived proxies
    and managers draw ports from the same pool.
    """
    if os.geteuid() != 0 or shutil.which(_BINARY[4]) is None:
        return []
    released: list[str] = []
    with _host_lock():
        for family in (4, 6):
            binary = shutil.which(_BINARY[family])
            if binary is None:
                continue
            listing = subprocess.run(
                [binary, "-w", "10", "-S", CHAIN], capture_output=True, text=True, check=False
            )
            if listing.returncode != 0:  # no chain: nothing installed yet
                continue
            for line in listing.stdout.splitlines():
                words = shlex.split(line)
                if words[:2] != ["-A", CHAIN] or "--dport" not in words:
                    continue
                if int(words[words.index("--dport") + 1]) in ports:
                    _run(family, "-D", CHAIN, *words[2:], check=False)
                    released.append(line)
    return released


def apply_bot_firewall(settings: Settings) -> list[Rule]:
    """At manager start: install the rules as BOTFLEET_BOT_FIREWALL allows; return what holds."""
    if settings.bot_firewall == "off":
        log.info("bot firewall off (BOTFLEET_BOT_FIREWALL=off)")
        return []
    for line in release(needed_ports(settings)):
        log.warning("bot firewall: removed a stale rule that reset a port our bots need: %s", line)
    try:
        installed = install(plan(settings))
    except FirewallNotNeeded as exc:
        log.info("bot firewall: nothing to install (%s)", exc)
        return []
    except FirewallUnavailable as exc:
        if settings.bot_firewall == "on":
            raise FirewallError(f"BOTFLEET_BOT_FIREWALL=on, but {exc}") from exc
        log.warning("bot firewall off: %s (BOTFLEET_BOT_FIREWALL=auto)", exc)
        return []
    log.info(
        "bot firewall: TCP reset in chain %s for %s",
        CHAIN,
        "; ".join(rule.describe() for rule in installed),
    )
    return installed


# ---- plumbing ------------------------------------------------------------------------------


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise FirewallUnavailable(f"cannot resolve the database host {host!r}: {exc}") from exc
    found = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    return sorted(found, key=lambda a: (a.version, int(a)))


def _ensure_chain(family: Family) -> None:
    """The chain and the jump to it, each created only when missing."""
    if not _run(family, "-n", "-L", CHAIN, check=False):
        _run(family, "-N", CHAIN)
    if not _run(family, "-C", "OUTPUT", "-j", CHAIN, check=False):
        _run(family, "-I", "OUTPUT", "1", "-j", CHAIN)


def _run(family: Family, *args: str, check: bool = True) -> bool:
    """One iptables call; False on a refusal when not `check`, FirewallUnavailable otherwise."""
    binary = shutil.which(_BINARY[family])
    if binary is None:
        raise FirewallUnavailable(f"{_BINARY[family]} is not installed")
    try:
        result = subprocess.run(
            [binary, "-w", "10", *args], capture_output=True, text=True, timeout=_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallUnavailable(f"{_BINARY[family]} failed: {exc}") from exc
    if result.returncode == 0:
        return True
    if check:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise FirewallUnavailable(
            f"{_BINARY[family]} {' '.join(args[:2])} failed: {message[-1] if message else '?'}"
        )
    return False


@contextmanager
def _host_lock() -> Iterator[None]:
    """One manager at a time checks and adds rules on this host (check-then-add is not atomic)."""
    directory = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    with (directory / _LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
