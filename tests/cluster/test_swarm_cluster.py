"""The fixture itself: three ready nodes, and a task on each one reaches the host's Redis over
the swarm's bridge (the path every bot of the drills depends on)."""

from __future__ import annotations

import redis
from docker.types import RestartPolicy

from tests.cluster.swarm_nodes import SwarmCluster
from tests.support import RedisServer, wait_until

# Writes its node's name into the host's Redis over a raw socket (the runtime image has Python,
# not a Redis client), then exits 0.
PROBE = """
import os, socket
s = socket.create_connection((os.environ["REDIS_HOST"], int(os.environ["REDIS_PORT"])), 10)
s.sendall(("AUTH %s\\r\\nSET smoke:%s ok\\r\\n" % (os.environ["REDIS_PASSWORD"],
           os.environ["NODE"])).encode())
answer = b""
while answer.count(b"\\r\\n") < 2:
    answer += s.recv(100)
assert answer == b"+OK\\r\\n+OK\\r\\n", answer
"""


def test_three_nodes_each_reach_the_hosts_redis(
    swarm_cluster: SwarmCluster, swarm_redis: RedisServer
) -> None:
    cluster = swarm_cluster
    assert {cluster.node_state(name) for name in cluster.nodes} == {"ready"}
    nodes = cluster.manager_client.nodes.list()
    assert sorted(n.attrs["Description"]["Hostname"] for n in nodes) == ["n1", "n2", "n3"]
    assert [n.attrs["Spec"]["Role"] for n in nodes].count("manager") == 1

    services = []
    try:
        for name in cluster.nodes:
            services.append(
                cluster.manager_client.services.create(
                    cluster.image_id,  # by id: no node tries a registry
                    command=["/opt/botfleet/bin/python", "-c", PROBE],
                    name=f"smoke-{cluster.run_id}-{name}",
                    env=[
                        f"REDIS_HOST={cluster.host_ip}",
                        f"REDIS_PORT={swarm_redis.port}",
                        f"REDIS_PASSWORD={swarm_redis.password}",
                        f"NODE={name}",
                    ],
                    networks=["host"],
                    constraints=[f"node.hostname=={name}"],
                    restart_policy=RestartPolicy(condition="none"),
                )
            )

        def all_complete() -> bool:
            states = {}
            for service in services:
                for task in service.tasks():
                    states[cluster.node_of_task(task)] = task["Status"]["State"]
            failed = {n: s for n, s in states.items() if s in ("failed", "rejected")}
            assert not failed, f"tasks failed: {failed}"
            return states == {name: "complete" for name in cluster.nodes}

        wait_until(all_complete, timeout=60, interval=0.2, what="a complete task on each node")
        seen = redis.Redis.from_url(swarm_redis.url)
        assert sorted(seen.keys("smoke:*")) == [b"smoke:n1", b"smoke:n2", b"smoke:n3"]
        seen.close()
    finally:
        for service in services:
            service.remove()
