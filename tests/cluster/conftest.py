"""The cluster lane's fixtures: one real three-node Swarm per session (tests/cluster/swarm_nodes.py)
and a Redis the nodes' bots can reach (it listens on the host's address on the swarm's bridge)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.cluster.swarm_nodes import SwarmCluster
from tests.support import RUNTIME_IMAGE, RedisServer


@pytest.fixture(scope="session")
def swarm_cluster() -> Iterator[SwarmCluster]:
    """n1 (manager), n2, n3, with the runtime image loaded by id (`image_id`); torn down at the
    end of the session even when tests failed. Build and teardown times are printed."""
    if os.geteuid() != 0:
        pytest.fail("the cluster lane builds network namespaces and engines: it needs root")
    cluster = SwarmCluster.build(RUNTIME_IMAGE)
    try:
        yield cluster
    finally:
        cluster.close()
        figures = ", ".join(f"{k} {v:.1f} s" for k, v in cluster.timings.items())
        print(f"\nswarm cluster {cluster.run_id}: {figures}")


@pytest.fixture(scope="session")
def swarm_redis(
    swarm_cluster: SwarmCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """redis-server on the host's bridge address, reachable from every node (and from here)."""
    server = swarm_cluster.redis_server(tmp_path_factory.mktemp("swarm-redis"))
    server.start()
    yield server
    server.stop()
