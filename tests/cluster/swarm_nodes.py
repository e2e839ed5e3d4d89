"""A real three-node Docker Swarm on this machine, in network namespaces the test makes itself.

Why: Swarm's node loss (a partition, a dead engine, a drain) can only be seen on a real swarm;
this builds one in ~10-20 s with the recipe measured in shared/notes/swarm-on-one-machine.md and
tears it down completely, so the cluster lane (`tests/cluster`, marker `cluster`) can prove the
swarm backend and the manager's handling of lost nodes. Needs root, `ip`, `unshare`, `dockerd`,
and the main engine's image to copy (`botfleet-runtime:latest`, scripts/build-images.sh).

Layout of one run (`run_id`: 6 random hex digits, so two runs on one machine never collide):
- network namespaces `bfsw-<id>-br` (a bridge `br0`), `bfsw-<id>-n1`, `-n2`, `-n3`; each node's
  `eth0` is a veth whose other end `vn<i>` sits in the bridge namespace; a veth `bfsw<id>h` gives
  the host namespace an address on the same /24 (`host_ip`, e.g. 192.168.239.1; nodes .11 .12
  .13; the first 192.168.X.0/24 from 239 up that nothing on the host routes, chosen under a lock).
  Nothing else is addressed: the nodes reach the host (and each other) and nothing beyond.
- one `dockerd` per node namespace (own --data-root under `root`, --exec-root, --pidfile and
  socket under `/run/bfsw-<id>/`, `--bridge=none --iptables=false --ip6tables=false
  --ip-masq=false`), started through `unshare --uts` with hostname n1/n2/n3, cgroups mounted again
  inside its mount namespace and a private /etc/docker bound over the host's (engine identity).
- n1 is the only Swarm manager (`--dispatcher-heartbeat 1s`: a lost node is marked down in 3-4
  s), n2 and n3 are workers. The runtime image is copied in with `docker save` / `docker load`
  (the three loads in parallel) and must be named by id (`image_id`): by tag, every node would
  first try a registry pull.

Use (tests/cluster/conftest.py does this once per session, fixture `swarm_cluster`):

    cluster = SwarmCluster.build()          # raises if anything fails, after cleaning up
    n2 = cluster.nodes["n2"]                # a SwarmNode: hostname, ip, socket_url, client
    cluster.partition("n2"); cluster.wait_node_state("n2", "down")
    cluster.heal("n2"); cluster.wait_node_state("n2", "ready")
    cluster.kill_engine("n3"); cluster.start_engine("n3")      # SIGKILL dockerd; start it again
    cluster.drain("n1"); cluster.activate("n1")
    cluster.label_node("n2", "zone", "b")
    cluster.containers_of_bot(bot_id)       # {"n2": 1}: running copies per node
    cluster.copies_of_bots([a, b])          # the same for several bots, one look per node
    cluster.bot_runs_on("n3", bot_id)       # a process of the bot in n3's namespace
    cluster.close()                         # stops everything, deletes everything

`cluster.manager_client` is a docker client on n1 (the Swarm manager): services and tasks.
Processes of the host namespace that bots must reach (the botfleet manager, Redis) listen on
`cluster.host_ip`; bots run with host networking inside their node's namespace:
`cluster.redis_server(dir)` (the `swarm_redis` fixture) and `swarm_manager(cluster, redis_url,
root)` (a real `botfleet serve` with BOTFLEET_ORCHESTRATOR=swarm on n1's engine, the image by
id, its API and bots' listener on `host_ip`: `BridgeHold`, `SwarmManager`).

A session that was killed leaves its run behind; the next `build()` cleans every run whose owner
(the pytest process, recorded in `<BASE>/<id>/state.json` before anything is made) is dead:
its dockerds, namespaces, links, cgroups and folders. Never touches the main Docker Engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from tests.support import (
    ADMIN_TOKEN,
    FAST_SETTINGS,
    Manager,
    PortHold,
    RedisServer,
    drop_database,
    fresh_database_url,
    user_env,
)

#: Every run's private folder lives under here (data roots, private /etc/docker, state.json).
BASE = Path(os.environ.get("BOTFLEET_SWARM_BASE", "/tmp/botfleet-swarm"))
#: Sockets, pidfiles and exec roots (short paths: containerd's sockets live below them).
RUN_BASE = Path("/run")
PREFIX = "bfsw"
NODE_NAMES = ("n1", "n2", "n3")
CGROUPS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")
API_VERSION = "1.41"
#: Third octets tried for the private 192.168.X.0/24, first free wins.
OCTETS = range(239, 255)
#: Seconds the nodes' engines give a container to stop on shutdown (teardown is faster).
SHUTDOWN_TIMEOUT_S = 2


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass
class SwarmNode:
    """One node: its own network namespace, dockerd and docker client."""

    name: str  # also its hostname (n1, n2, n3) and how Swarm lists it
    ip: str
    netns: str
    bridge_port: str  # its veth's end in the bridge namespace: down = partitioned
    root: Path  # private folder: data/, etc/, dockerd.log
    run_dir: Path  # exec root, socket and pidfile live beside it
    node_id: str = ""
    _client: docker.DockerClient | None = field(default=None, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def hostname(self) -> str:
        return self.name

    @property
    def socket_path(self) -> Path:
        return self.run_dir.parent / f"{self.name}.sock"

    @property
    def socket_url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pidfile(self) -> Path:
        return self.run_dir.parent / f"{self.name}.pid"

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.netns}"

    @property
    def client(self) -> docker.DockerClient:
        """A docker client on this node's engine (answers even while the node is partitioned:
        the socket is a file, not the network)."""
        if self._client is None:
            self._client = docker.DockerClient(
                base_url=self.socket_url, version=API_VERSION, timeout=30
            )
        return self._client

    def engine_pid(self) -> int | None:
        pid = _read_pid(self.pidfile)
        return pid if pid and _start_time(pid) and not _is_zombie(pid) else None

    def answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # any failure means "not (yet)"
            return False

    def start_engine(self) -> None:
        """Start this node's dockerd (again) in its namespace and wait until it answers."""
        etc = self.root / "etc"
        data = self.root / "data"
        etc.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        mounts = " && ".join(
            f"mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}"
            for c in CGROUPS
        )
        script = (
            f"mount --bind {etc} /etc/docker && hostname {self.name} && "
            "mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup && "
            f"{mounts} && mkdir -p /sys/fs/cgroup/systemd && "
            "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd && "
            f"exec dockerd --data-root {data} --exec-root {self.run_dir} "
            f"--pidfile {self.pidfile} -H {self.socket_url} --bridge=none --iptables=false "
            f"--ip6tables=false --ip-masq=false --cgroup-parent {self.cgroup_parent} "
            f"--shutdown-timeout {SHUTDOWN_TIMEOUT_S}"
        )
        with (self.root / "dockerd.log").open("ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", script],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._proc, self._client = proc, None

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd of {self.name} exited: {self.log_tail()}")
            return self.answers()

        _wait(up, 60, f"dockerd of {self.name}", interval=0.05)

    def kill_engine(self) -> None:
        """SIGKILL this node's dockerd (its containers keep running, as after a crash)."""
        pid = self.engine_pid()
        if pid is None:
            raise RuntimeError(f"dockerd of {self.name} is not running")
        os.kill(pid, signal.SIGKILL)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait(10)  # our child (ip netns exec execs into it): reap it
        _wait(lambda: _start_time(pid) is None or _is_zombie(pid), 10, "dockerd to die")
        self._client = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.root / "dockerd.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@dataclass
class SwarmCluster:
    """A three-node Swarm (n1 manager, n2 and n3 workers); see the module docstring."""

    run_id: str
    root: Path
    run_root: Path
    subnet: str  # "192.168.239"
    nodes: dict[str, SwarmNode]
    image_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- names -------------------------------------------------------------------------------
    @property
    def host_ip(self) -> str:
        """The host namespace's address on the nodes' bridge: listen here to be reached."""
        return f"{self.subnet}.1"

    @property
    def bridge_netns(self) -> str:
        return f"{PREFIX}-{self.run_id}-br"

    @property
    def host_link(self) -> str:
        return f"{PREFIX}{self.run_id}h"  # 11 characters: within IFNAMSIZ

    @property
    def manager_node(self) -> SwarmNode:
        return self.nodes["n1"]

    @property
    def manager_client(self) -> docker.DockerClient:
        """A docker client on the Swarm manager (n1): services, tasks, nodes."""
        return self.manager_node.client

    def node(self, name: str) -> SwarmNode:
        return self.nodes[name]

    # ---- build -------------------------------------------------------------------------------
    @classmethod
    def build(cls, image: str = "botfleet-runtime:latest") -> SwarmCluster:
        """Clean stale runs, make the namespaces, start three engines, form the swarm and load
        `image` into every node. On any failure everything made so far is removed."""
        began = time.monotonic()
        BASE.mkdir(mode=0o700, parents=True, exist_ok=True)
        run_id = secrets.token_hex(3)
        with _base_lock():
            clean_stale_runs()
            subnet = _free_subnet()
            root = BASE / run_id
            root.mkdir(mode=0o700)
            run_root = RUN_BASE / f"{PREFIX}-{run_id}"
            nodes = {
                name: SwarmNode(
                    name=name,
                    ip=f"{subnet}.1{index}",
                    netns=f"{PREFIX}-{run_id}-{name}",
                    bridge_port=f"vn{index}",
                    root=root / name,
                    run_dir=run_root / name,
                )
                for index, name in enumerate(NODE_NAMES, start=1)
            }
            cluster = cls(run_id, root, run_root, subnet, nodes)
            cluster._write_state()
            try:
                cluster._make_network()
            except BaseException:
                cluster.close()
                raise
        try:
            cluster._start(image)
        except BaseException:
            cluster.close()
            raise
        cluster.timings["build_s"] = time.monotonic() - began
        return cluster

    def _write_state(self) -> None:
        """Recorded before anything is made, so a later run can undo all of it."""
        state = {
            "owner_pid": os.getpid(),
            "owner_start": _start_time(os.getpid()),
            "subnet": self.subnet,
            "run_root": str(self.run_root),
            "netns": [self.bridge_netns, *(n.netns for n in self.nodes.values())],
            "host_link": self.host_link,
            "pidfiles": [str(n.pidfile) for n in self.nodes.values()],
        }
        (self.root / "state.json").write_text(json.dumps(state))

    def _make_network(self) -> None:
        br = self.bridge_netns
        _ip("netns", "add", br)
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", "vh", "netns", br)
        _ip("-n", br, "link", "set", "vh", "master", "br0", "up")
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        for node in self.nodes.values():
            ns = node.netns
            _ip("netns", "add", ns)
            _ip(
                *("link", "add", node.bridge_port, "netns", br, "type", "veth"),
                *("peer", "name", "eth0", "netns", ns),
            )
            _ip("-n", br, "link", "set", node.bridge_port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def _start(self, image: str) -> None:
        t0 = time.monotonic()
        saved = self.root / "image.tar"
        save = subprocess.Popen(
            ["docker", "save", "-o", str(saved), image],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        image_id = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Id}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(SwarmNode.start_engine, self.nodes.values()))
        self.timings["engines_s"] = time.monotonic() - t0
        self._form_swarm()
        self.timings["swarm_s"] = time.monotonic() - t0
        _, err = save.communicate()
        if save.returncode != 0:
            raise RuntimeError(f"docker save {image} failed: {err.decode()}")
        self.timings["save_s"] = time.monotonic() - t0
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda n: _load(n, saved), self.nodes.values()))
        saved.unlink()
        self.image_id = image_id
        self.timings["load_s"] = time.monotonic() - t0

    def _form_swarm(self) -> None:
        manager = self.manager_node
        manager.client.swarm.init(
            advertise_addr=manager.ip,
            listen_addr=f"{manager.ip}:2377",
            default_addr_pool=["172.30.0.0/16"],
            subnet_size=24,
            dispatcher_heartbeat_period=1_000_000_000,
        )
        token = manager.client.swarm.attrs["JoinTokens"]["Worker"]
        for node in self.nodes.values():
            if node is not manager:
                node.client.swarm.join(
                    remote_addrs=[f"{manager.ip}:2377"],
                    join_token=token,
                    listen_addr=f"{node.ip}:2377",
                    advertise_addr=node.ip,
                )
        for node in self.nodes.values():
            node.node_id = node.client.info()["Swarm"]["NodeID"]
        for name in self.nodes:
            self.wait_node_state(name, "ready")

    # ---- operations the drills need ----------------------------------------------------------
    def partition(self, name: str) -> None:
        """Cut node `name` off the bridge (its veth's bridge end down): it runs on, unheard."""
        _ip("-n", self.bridge_netns, "link", "set", self.nodes[name].bridge_port, "down")

    def heal(self, name: str) -> None:
        _ip("-n", self.bridge_netns, "link", "set", self.nodes[name].bridge_port, "up")

    def kill_engine(self, name: str) -> None:
        """SIGKILL node `name`'s dockerd (its containers and containerd keep running)."""
        self.nodes[name].kill_engine()

    def start_engine(self, name: str) -> None:
        """Start node `name`'s dockerd again (it rejoins the swarm by itself)."""
        self.nodes[name].start_engine()

    def drain(self, name: str) -> None:
        self._update_node(name, availability="drain")

    def activate(self, name: str) -> None:
        self._update_node(name, availability="active")

    def label_node(self, name: str, key: str, value: str) -> None:
        self._update_node(name, labels={key: value})

    def _update_node(
        self, name: str, *, availability: str | None = None, labels: dict[str, str] | None = None
    ) -> None:
        with self._lock:  # a node update carries the version read: one at a time
            for _ in range(5):
                node = self.manager_client.nodes.get(self.nodes[name].node_id)
                spec = dict(node.attrs["Spec"])
                if availability:
                    spec["Availability"] = availability
                if labels:
                    spec["Labels"] = {**spec.get("Labels", {}), **labels}
                try:
                    node.update(spec)
                    return
                except docker.errors.APIError as exc:
                    if "update out of sequence" not in str(exc):
                        raise
            raise RuntimeError(f"could not update node {name}")

    def node_state(self, name: str) -> str:
        """Swarm's state of node `name` as the manager sees it: ready, down, unknown, ..."""
        node = self.manager_client.nodes.get(self.nodes[name].node_id)
        return str(node.attrs["Status"]["State"])

    def wait_node_state(self, name: str, state: str, timeout: float = 60) -> float:
        """Wait until the manager sees node `name` in `state`; the seconds it took."""
        began = time.monotonic()
        _wait(lambda: self.node_state(name) == state, timeout, f"node {name} {state}", 0.2)
        return time.monotonic() - began

    def node_of_task(self, task: dict[str, Any]) -> str | None:
        """The name (n1..n3) of the node a task (from the services API) was given to."""
        for node in self.nodes.values():
            if node.node_id == task.get("NodeID"):
                return node.name
        return None

    def containers_of_bot(self, bot_id: str) -> dict[str, int]:
        """Running copies of bot `bot_id` per node: see `copies_of_bots`."""
        return self.copies_of_bots([bot_id])[bot_id]

    def copies_of_bots(self, bot_ids: list[str]) -> dict[str, dict[str, int]]:
        """Per bot, its running copies per node, from one look at each node: the containers of
        a node whose engine answers (a partitioned node's engine still answers here: its socket
        is local) labelled `botfleet.bot_id=<id>` or whose Swarm service is named after the bot
        (the swarm backend names services `<prefix><bot id>-<attempt>`); on a node whose engine
        is dead, whether a process there has the bot in its environment (`bot_runs_on`)."""
        copies: dict[str, dict[str, int]] = {bot_id: {} for bot_id in bot_ids}
        for node in self.nodes.values():
            running = None
            if node.engine_pid() is not None:
                with contextlib.suppress(Exception):  # the engine died meanwhile
                    running = node.client.api.containers()
            for bot_id in bot_ids:
                if running is None:
                    found = int(self.bot_runs_on(node.name, bot_id))
                else:
                    found = sum(_names_bot(c.get("Labels") or {}, bot_id) for c in running)
                if found:
                    copies[bot_id][node.name] = found
        return copies

    def bot_runs_on(self, name: str, bot_id: str) -> bool:
        """Whether a process in node `name`'s namespace has bot `bot_id` in its environment
        (the runtime's BOTFLEET_BOT_ID): true whether or not the node's engine answers."""
        pids = _ip("netns", "pids", self.nodes[name].netns, check=False).stdout.split()
        needle = f"BOTFLEET_BOT_ID={bot_id}".encode()
        for pid in pids:
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    return True
        return False

    def redis_server(self, workdir: Path) -> RedisServer:
        """A password-protected redis-server listening on `host_ip` only (not started)."""
        return RedisServer(workdir, host=self.host_ip)

    # ---- teardown ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the engines (by pidfile), kill what they left in their namespaces, delete the
        namespaces, the host's link, the cgroups and the folders. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        began = time.monotonic()
        for node in self.nodes.values():
            if node._client is not None:
                with contextlib.suppress(Exception):
                    node._client.close()
        _teardown(json.loads((self.root / "state.json").read_text()), self.root)
        self.timings["teardown_s"] = time.monotonic() - began


def _names_bot(labels: dict[str, str], bot_id: str) -> bool:
    if labels.get("botfleet.bot_id") == bot_id:
        return True
    service = labels.get("com.docker.swarm.service.name", "")
    return service.rsplit("-", 1)[0].endswith(bot_id)


def _load(node: SwarmNode, saved: Path) -> None:
    result = subprocess.run(
        ["docker", "-H", node.socket_url, "load", "-q", "-i", str(saved)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"docker load into {node.name} failed: {result.stderr}")


@contextlib.contextmanager
def _base_lock() -> Iterator[None]:
    """One run at a time chooses its subnet and cleans stale runs."""
    with (BASE / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _free_subnet() -> str:
    """The first 192.168.X (X in OCTETS) no route or address of the host uses and no live run
    claims (called under the lock, before this run's address is added)."""
    used = _ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "addr").stdout
    claimed = set()
    for state_file in BASE.glob("*/state.json"):
        with contextlib.suppress(OSError, ValueError):
            claimed.add(json.loads(state_file.read_text())["subnet"])
    for octet in OCTETS:
        subnet = f"192.168.{octet}"
        if f"{subnet}." not in used and subnet not in claimed:
            return subnet
    raise RuntimeError("no free 192.168.X.0/24 for the swarm's bridge")


def clean_stale_runs() -> list[str]:
    """Tear down every run under BASE whose owner process is gone (a killed session); the run
    ids cleaned. Called under the lock by `build`."""
    cleaned = []
    for state_file in BASE.glob("*/state.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if _start_time(state["owner_pid"]) == state["owner_start"]:
            continue  # its session still runs
        _teardown(state, state_file.parent)
        cleaned.append(state_file.parent.name)
    return cleaned


def _teardown(state: dict[str, Any], root: Path) -> None:
    """Undo one run, whatever part of it exists; never raises for what is already gone."""
    pidfiles = [Path(p) for p in state["pidfiles"]]
    for pidfile in pidfiles:  # a graceful stop first: dockerd unmounts and stops its tasks
        pid = _read_pid(pidfile)
        if pid and _start_time(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    node_ns = state["netns"][1:]
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S + 8
    for pidfile in pidfiles:
        pid = _read_pid(pidfile)
        while pid and _start_time(pid) and not _is_zombie(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    for ns in node_ns:  # whatever is left in a node's namespace (shims, tasks) was ours
        _kill_namespace(ns)
    _ip("link", "del", state["host_link"], check=False)
    for ns in state["netns"]:
        _ip("netns", "del", ns, check=False)
    for ns in node_ns:
        _remove_cgroups(f"/{ns}")
    shutil.rmtree(state["run_root"], ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def _kill_namespace(ns: str) -> None:
    for _ in range(50):
        pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _remove_cgroups(parent: str) -> None:
    """rmdir the cgroups dockerd made under `parent` in every hierarchy, deepest first."""
    for hierarchy in (*CGROUPS, "systemd"):
        top = Path(f"/sys/fs/cgroup/{hierarchy}{parent}")
        if not top.is_dir():
            continue
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


# ---- a real manager on the swarm ---------------------------------------------------------------
class BridgeHold(PortHold):
    """`PortHold` on the host's bridge address instead of loopback: bots on the nodes reach it."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._hold = _reusable_socket()
        self._hold.bind((host, 0))
        self.port = int(self._hold.getsockname()[1])

    def listener(self) -> socket.socket:
        sock = _reusable_socket()
        sock.bind((self.host, self.port))
        sock.listen(128)
        return sock


def _reusable_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


@dataclass
class SwarmManager(Manager):
    """A real `botfleet serve` with BOTFLEET_ORCHESTRATOR=swarm on n1's engine, its API and
    bots' listener on the host's bridge address (`host`), so bots on every node call it back."""

    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def callback_url(self) -> str:
        return f"http://{self.host}:{self.callback_port}"

    def env(self) -> dict[str, str]:
        env = user_env(**FAST_SETTINGS)
        env.update(
            BOTFLEET_PORT=str(self.port),
            BOTFLEET_CALLBACK_PORT=str(self.callback_port),
            BOTFLEET_HOST=self.host,  # the callback URL bots are given: http://HOST:PORT
            BOTFLEET_DATA_DIR=str(self.data_dir),
            BOTFLEET_DATABASE_URL=self.database_url,
            BOTFLEET_REDIS_URL=self.redis_url,
            BOTFLEET_ADMIN_TOKEN=ADMIN_TOKEN,
            BOTFLEET_ORCHESTRATOR="swarm",
        )
        env.update(self.extra_env)
        return env


@contextlib.contextmanager
def swarm_manager(
    cluster: SwarmCluster, redis_url: str, root: Path, **settings: str
) -> Iterator[SwarmManager]:
    """A manager over a fresh database, driving `cluster` through n1 (the Swarm manager), with
    the runtime image by id; `settings` are extra BOTFLEET_* variables. Stopped and its
    database dropped at the end (its bots go with the cluster)."""
    host = cluster.host_ip
    manager = SwarmManager(
        data_dir=root / "manager",
        database_url=fresh_database_url(root),
        redis_url=redis_url,
        extra_env={
            "BOTFLEET_SWARM_BASE_URL": cluster.manager_node.socket_url,
            "BOTFLEET_SWARM_DEFAULT_IMAGE": cluster.image_id,
            **settings,
        },
        hold=BridgeHold(host),
        callback_hold=BridgeHold(host),
        host=host,
    )
    try:
        manager.start()
        yield manager
    finally:
        manager.release()
        drop_database(manager.database_url)
