"""Multi-node drills: a real manager (BOTFLEET_ORCHESTRATOR=swarm) runs bots on the three-node
swarm of `swarm_cluster` while nodes are partitioned, lose their engine, are drained, and the
manager itself restarts. What each drill proves and does not: docs/explanation/cluster-drills.md.

The drills run at once, on different nodes, in one timeline (`drills`, module-scoped): pinned by
node labels, two bots per drill (one without restarts, one with `restart.max_retries`) run on n2
(partitioned for 60 s; the manager restarts meanwhile), n3 (its dockerd SIGKILLed, then started
again) and n1 (drained). A sampler watches throughout how many copies of each bot run (every
node's containers; the processes of a node whose engine is dead) and each bot's status. Each
test below then asserts one drill on what was recorded. Waits are for positive markers (a
state reached, a reconciler pass begun after a moment); the only clock wait is the partition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.cluster.swarm_nodes import SwarmCluster, SwarmManager, swarm_manager
from tests.support import RedisServer, transitions, wait_for_status, wait_until

PARTITION_S = 60.0  # the figure: a node cut off for a minute while its bots run
ENDED = {"completed", "failed"}
RETRIES = {"max_retries": 2, "backoff_s": 1}
#: Which node each drill's bots start on, by a node label of the drill's name.
HOME = {"drain": "n1", "partition": "n2", "engine": "n3"}


@dataclass
class Watch:
    """What the sampler saw: per bot, the most copies running at once (and when), and every
    status change with its time (monotonic seconds)."""

    copies: dict[str, int] = field(default_factory=dict)
    copies_seen: dict[str, list[tuple[float, dict[str, int]]]] = field(default_factory=dict)
    statuses: dict[str, list[tuple[float, str, int]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Drills:
    """The timeline's record, for the tests to judge."""

    bots: dict[str, str]  # name (e.g. "partition-retry") → bot id
    home_nodes: dict[str, dict[str, int]] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # moment name → monotonic seconds
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)  # snapshot name → bots
    finals: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, list[tuple[str, str, str, str]]] = field(default_factory=dict)
    attempts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    nodes_after: dict[str, dict[str, int]] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)
    watch: Watch = field(default_factory=Watch)
    failure: str = ""  # the timeline stopped early: why

    def summary(self) -> str:
        """The timeline in seconds from the partition, and each bot's history (printed: -s)."""
        zero = self.marks.get("partitioned", 0.0)
        lines = ["drills: " + ", ".join(f"{k} {v - zero:+.1f}s" for k, v in self.marks.items())]
        if self.failure:
            lines.append(f"stopped: {self.failure}")
        for name, bot_id in self.bots.items():
            shown = self.watch.statuses.get(bot_id, [])
            steps = " ".join(f"{at - zero:+.1f}:{status}/{n}" for at, status, n in shown)
            copies = " ".join(
                f"{at - zero:+.1f}:{where}" for at, where in self.watch.copies_seen.get(bot_id, [])
            )
            lines.append(f"  {name}: {steps}\n    copies {copies}")
            lines += [f"    {move}" for move in self.history.get(name, [])]
        return "\n".join(lines)

    def status_between(self, name: str, start: str, end: str) -> list[str]:
        """The statuses bot `name` showed between two marks (the one it had at `start` too)."""
        began, ended = self.marks[start], self.marks.get(end, float("inf"))
        shown: list[str] = []
        for at, status, _ in self.watch.statuses.get(self.bots[name], []):
            if at <= began:
                shown = [status]
            elif at <= ended:
                shown.append(status)
        return shown


class Sampler(threading.Thread):
    """Counts, every few tenths of a second, the running copies of each bot across the nodes
    and reads each bot's status through the API (skipped while the manager restarts)."""

    def __init__(self, cluster: SwarmCluster, manager: SwarmManager, bots: list[str]) -> None:
        super().__init__(daemon=True, name="drill-sampler")
        self.cluster, self.manager, self.bots = cluster, manager, bots
        self.watch = Watch()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.3):
            self.sample_once()

    def sample_once(self) -> None:
        try:
            with self.manager.admin() as api:
                self._sample(api)
        except Exception as exc:  # a sampler error is a finding, not a crash
            self.watch.errors.append(repr(exc))

    def _sample(self, api: httpx.Client) -> None:
        copies = self.cluster.copies_of_bots(self.bots)
        now = time.monotonic()
        for bot_id, where in copies.items():
            total = sum(where.values())
            if total > self.watch.copies.get(bot_id, 0):
                self.watch.copies[bot_id] = total
            seen = self.watch.copies_seen.setdefault(bot_id, [])
            if not seen or seen[-1][1] != where:
                seen.append((now, where))
        for bot_id in self.bots:
            try:
                body = api.get(f"/bots/{bot_id}", timeout=2).json()
            except httpx.HTTPError:
                return  # the manager is restarting
            shown = self.watch.statuses.setdefault(bot_id, [])
            if not shown or shown[-1][1:] != (body["status"], body["attempt"]):
                shown.append((time.monotonic(), body["status"], body["attempt"]))


def start_bot(api: httpx.Client, drill: str, retries: bool) -> str:
    body: dict[str, Any] = {
        "bot": "demo",
        "config": {},
        "name": f"{drill}-{'retry' if retries else 'once'}",
        "placement": {"node_labels": {drill: "yes"}},
    }
    if retries:
        body["restart"] = RETRIES
    response = api.post("/bots", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def snapshot(api: httpx.Client, bots: dict[str, str]) -> dict[str, Any]:
    return {name: api.get(f"/bots/{bot_id}").json() for name, bot_id in bots.items()}


def ended_or_relaunched(api: httpx.Client, bot_id: str, retries: bool) -> bool:
    """The bot's first attempt is over: it ended, or (with restarts) its attempt 2 is active."""
    body = api.get(f"/bots/{bot_id}").json()
    if retries and body["status"] not in ENDED:
        return body["attempt"] >= 2 and body["status"] == "active"
    return body["status"] in ENDED


def first_attempts_over(
    api: httpx.Client, bots: dict[str, str], drill: str, timeout: float
) -> None:
    for kind in ("once", "retry"):
        bot_id = bots[f"{drill}-{kind}"]

        def over(bot_id: str = bot_id, retries: bool = kind == "retry") -> bool:
            return ended_or_relaunched(api, bot_id, retries)

        wait_until(over, timeout=timeout, what=f"{drill}-{kind} ended or relaunched")


@pytest.fixture(scope="module")
def drills(
    swarm_cluster: SwarmCluster, swarm_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Drills]:
    """Runs the whole timeline once; the tests judge its record."""
    cluster = swarm_cluster
    for drill, node in HOME.items():
        cluster.activate(node)  # whatever tests before left
        cluster.label_node(node, drill, "yes")
    root = tmp_path_factory.mktemp("drills")
    with swarm_manager(cluster, swarm_redis.url, root) as manager:
        _, api = manager.new_user(max_bots=20)
        bots = {
            f"{drill}-{kind}": start_bot(api, drill, kind == "retry")
            for drill in HOME
            for kind in ("once", "retry")
        }
        record = Drills(bots)
        sampler = Sampler(cluster, manager, list(bots.values()))
        try:
            run_timeline(cluster, manager, api, record, sampler)
        except (AssertionError, TimeoutError) as exc:
            record.failure = f"{type(exc).__name__}: {exc}"
        finally:
            sampler.done.set()
            if sampler.is_alive():
                sampler.join(10)
                sampler.sample_once()  # what the timeline's last wait saw, recorded too
            record.watch = sampler.watch
            record.finals = snapshot(api, bots)
            for name, bot_id in bots.items():
                record.history[name] = transitions(api, bot_id)
                record.attempts[name] = api.get(f"/bots/{bot_id}/attempts").json()["items"]
            api.close()
            print(record.summary())
        yield record


def run_timeline(
    cluster: SwarmCluster,
    manager: SwarmManager,
    api: httpx.Client,
    record: Drills,
    sampler: Sampler,
) -> None:
    bots, marks = record.bots, record.marks

    def mark(name: str) -> None:
        marks[name] = time.monotonic()

    for bot_id in bots.values():
        wait_for_status(api, bot_id, {"active"}, timeout=60)
    record.home_nodes = {name: cluster.containers_of_bot(b) for name, b in bots.items()}
    sampler.start()
    mark("all_active")

    # t=0: n2 is cut off for 60 s, n3's engine dies. n3 may take n2's bots, but only after
    # proof that their first copy ended: a copy there now would be a second one.
    cluster.partition("n2")
    mark("partitioned")
    cluster.label_node("n3", "partition", "yes")
    cluster.kill_engine("n3")
    mark("engine_killed")
    cluster.wait_node_state("n2", "down")
    mark("n2_down")
    cluster.wait_node_state("n3", "down")
    mark("n3_down")

    # Drill 3: with n3 marked down, two reconciler passes begun since: its bots still run and
    # still heartbeat, so nothing may end them. Then the engine comes back and kills them.
    manager.loop_runs("reconciler", 2)
    record.seen["engine_down"] = snapshot(api, bots)
    cluster.start_engine("n3")
    mark("engine_started")
    cluster.wait_node_state("n3", "ready")
    mark("n3_ready")
    first_attempts_over(api, bots, "engine", timeout=60)
    mark("engine_drill_done")

    # Drill 5: the manager restarts while n2 is still cut off; once it has judged a whole
    # heartbeat budget again, the partitioned bots are where they were, none lost, none failed.
    record.seen["before_restart"] = snapshot(api, bots)
    manager.stop()
    mark("manager_stopped")
    manager.start()
    manager.judged_a_heartbeat_budget_after_leading()
    mark("manager_judged")
    record.seen["after_restart"] = snapshot(api, bots)

    # Drill 4: n1 is drained; n3 may take its bots.
    cluster.label_node("n3", "drain", "yes")
    cluster.drain("n1")
    mark("drained")
    first_attempts_over(api, bots, "drain", timeout=60)
    mark("drain_drill_done")

    # Drill 2: the partition lasts its minute, then heals; Swarm kills the first copies ~19 s
    # later, and only then may the bots end, or start again.
    left = PARTITION_S - (time.monotonic() - marks["partitioned"])
    record.seen["partition_end"] = snapshot(api, bots)
    time.sleep(max(0.0, left))
    cluster.heal("n2")
    mark("healed")
    cluster.wait_node_state("n2", "ready")
    mark("n2_ready")
    first_attempts_over(api, bots, "partition", timeout=90)
    mark("partition_drill_done")
    cluster.activate("n1")

    # Nothing lost track of: every ended attempt's service is removed, only the live bots'
    # services remain on the swarm.
    def only_live_services() -> bool:
        live = {b["runtime_ref"] for b in snapshot(api, bots).values() if b["status"] == "active"}
        ours = [
            s.id
            for s in cluster.manager_client.services.list()
            if s.attrs["Spec"].get("Labels", {}).get("botfleet.bot_id") in bots.values()
        ]
        record.leftovers = sorted(set(ours) - live)
        return not record.leftovers

    wait_until(only_live_services, timeout=60, what="only the live bots' services")
    record.nodes_after = {name: cluster.containers_of_bot(b) for name, b in bots.items()}


def judge(drills: Drills) -> None:
    """A timeline that stopped early fails every drill, with its reason."""
    assert not drills.failure, f"the timeline stopped: {drills.failure}; marks {drills.marks}"
    assert not drills.watch.errors, drills.watch.errors[:5]


def ended_with(drills: Drills, name: str) -> tuple[str, str]:
    final = drills.finals[name]
    return final["status"], final["status_reason"]


def first_attempt(drills: Drills, name: str) -> dict[str, Any]:
    return next(a for a in drills.attempts[name] if a["attempt"] == 1)


def never_two_copies(drills: Drills, *names: str) -> None:
    for name in names:
        bot_id = drills.bots[name]
        most = drills.watch.copies.get(bot_id, 0)
        assert most == 1, (name, most, drills.watch.copies_seen.get(bot_id))


def relaunched_elsewhere_after_proof(drills: Drills, name: str, allowed: set[str]) -> None:
    """Attempt 2 runs (active) on an allowed node, and the first copy was seen gone before."""
    final = drills.finals[name]
    assert (final["status"], final["attempt"]) == ("active", 2), final
    assert first_attempt(drills, name)["outcome"] is not None, drills.attempts[name]
    now_on = set(drills.nodes_after[name])
    assert now_on and now_on <= allowed, (name, drills.nodes_after[name])


def test_bots_spread_over_the_three_nodes(drills: Drills) -> None:
    assert not drills.failure or drills.home_nodes, drills.failure
    for name, where in drills.home_nodes.items():
        assert where == {HOME[name.split("-")[0]]: 1}, (name, where)
    assert {node for where in drills.home_nodes.values() for node in where} == {"n1", "n2", "n3"}


def test_a_partitioned_node_never_runs_a_bot_twice_nor_fails_it_early(drills: Drills) -> None:
    judge(drills)
    never_two_copies(drills, "partition-once", "partition-retry")
    for name in ("partition-once", "partition-retry"):
        # While n2 was cut off its bots were never ended: active, stopping (stopped for
        # silence, not proven dead) or waiting for a restart that needs that proof.
        shown = drills.status_between(name, "partitioned", "healed")
        assert shown and not ENDED & set(shown), (name, shown)
    # Without restarts: it ends only after the heal, failed for the silence the manager
    # judged first (or for its lost node), never `completed`.
    assert ended_with(drills, "partition-once") in {
        ("failed", "heartbeat_lost"),
        ("failed", "node_lost"),
    }, drills.history["partition-once"]
    once = drills.bots["partition-once"]
    ended_at = [at for at, status, _ in drills.watch.statuses[once] if status in ENDED]
    assert ended_at and ended_at[0] > drills.marks["healed"], drills.watch.statuses[once]
    # With restarts: attempt 1 ended for the same reasons, attempt 2 ran only after the heal
    # (once the first copy was proven gone), on a node it may run on.
    assert first_attempt(drills, "partition-retry")["outcome"] in {"heartbeat_lost", "node_lost"}
    retry = drills.bots["partition-retry"]
    second = [at for at, status, n in drills.watch.statuses[retry] if n == 2 and status == "active"]
    assert second and second[0] > drills.marks["healed"], drills.watch.statuses[retry]
    relaunched_elsewhere_after_proof(drills, "partition-retry", {"n2", "n3"})


def test_a_killed_engine_ends_its_bots_only_once_it_is_back(drills: Drills) -> None:
    judge(drills)
    never_two_copies(drills, "engine-once", "engine-retry")
    down = drills.seen["engine_down"]
    for name in ("engine-once", "engine-retry"):
        # Its dockerd dead and the node down, the bots run on and heartbeat: nothing ends.
        assert (down[name]["status"], down[name]["attempt"]) == ("active", 1), down[name]
        shown = drills.status_between(name, "engine_killed", "engine_started")
        assert set(shown) == {"active"}, (name, shown)
    # The engine restarted killed them: the node was lost under them.
    assert ended_with(drills, "engine-once") == ("failed", "node_lost"), drills.history[
        "engine-once"
    ]
    assert first_attempt(drills, "engine-retry")["outcome"] == "node_lost", drills.attempts[
        "engine-retry"
    ]
    relaunched_elsewhere_after_proof(drills, "engine-retry", {"n3"})


def test_a_drained_node_evicts_its_bots_and_restarts_them_elsewhere(drills: Drills) -> None:
    judge(drills)
    never_two_copies(drills, "drain-once", "drain-retry")
    assert ended_with(drills, "drain-once") == ("failed", "evicted"), drills.history["drain-once"]
    assert first_attempt(drills, "drain-retry")["outcome"] == "evicted", drills.attempts[
        "drain-retry"
    ]
    relaunched_elsewhere_after_proof(drills, "drain-retry", {"n3"})


def test_a_manager_restarted_during_the_partition_keeps_track_of_every_bot(
    drills: Drills,
) -> None:
    judge(drills)
    before, after = drills.seen["before_restart"], drills.seen["after_restart"]
    for name in ("partition-once", "partition-retry", "engine-retry", "drain-once", "drain-retry"):
        # A whole heartbeat budget judged after the restart: nothing moved for it, nothing
        # ended, every workload still known by the same reference.
        keep = ("status", "attempt", "runtime_ref")
        assert [after[name][k] for k in keep] == [before[name][k] for k in keep], (
            name,
            before[name],
            after[name],
        )
        assert after[name]["status"] not in ENDED
    # ... and after the heal every bot reached its end (the other tests), and the swarm holds
    # the live bots' services only: no attempt's service was forgotten.
    assert drills.leftovers == [], drills.leftovers
