"""Fixtures: a real Redis, a fresh database (PostgreSQL or SQLite) and a real manager process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.db import make_engine, make_session_factory
from botfleet.manager.migrate import upgrade
from tests import support
from tests.listeners import Receiver
from tests.support import RUNTIME_IMAGE, Manager, RedisServer, fresh_database_url, running_manager

# The dashboard's browser fixture (`browser`) and helpers, shared by tests/integration/ui.
pytest_plugins = ["tests.ui_browser"]

TESTS = Path(__file__).parent
# The tier is the folder: tests/unit, tests/integration/<area>, tests/e2e.
TIERS = ("unit", "integration", "e2e", "cluster")
# The areas whose tests exercise SQL (services, migrations, pagination, locks, retention,
# persistence through the API): they run again on SQLite (`make test-sqlite`, marker `sql`).
# Fleet tests that merely need a manager (e2e, backends, ui, ...) run once, on PostgreSQL.
SQL_AREAS = {
    "integration/api",
    "integration/services",
    "integration/webhooks",
    "integration/resilience",
}
# In those areas, the modules whose subject is not SQL run once too (`make test` must stay under
# 20 minutes on 2 cores): the HTTP surface before any query (the fuzzer, the OpenAPI document,
# the body guard), Redis (rate limits, auth floods, the embedded Redis, its outage), log files,
# signals, and bots outliving a manager restart.
NOT_SQL = {
    "integration/api/test_fuzz.py",
    "integration/api/test_openapi.py",
    "integration/api/test_input_limits.py",
    "integration/api/test_rate_limits.py",
    "integration/api/test_rate_limit_burst.py",
    "integration/api/test_auth_floods.py",
    "integration/api/test_logs_bounded.py",
    # the queue and timers over HTTP; their SQL runs twice in services/test_queue_admission.py
    "integration/api/test_queue.py",
    # health rules over HTTP; their SQL runs twice in services/test_health_rule_firing.py
    "integration/api/test_health_rules.py",
    "integration/resilience/test_embedded_redis.py",
    "integration/resilience/test_redis_outage.py",
    "integration/resilience/test_stop_signals.py",
    "integration/resilience/test_manager_restart.py",
    # Their SQL runs on both databases in tests/integration/services (the worker, the firing,
    # the admission); the HTTP modules show the routes, once.
    "integration/api/test_bulk_operations.py",
    "integration/api/test_schedules.py",
    # Commands travel over Redis; their rows are the same SQL as any other command's.
    "integration/api/test_custom_commands.py",
    "integration/api/test_secrets_update.py",
    # A test delivery and a graceful stop: HTTP and signals.
    "integration/webhooks/test_webhook_test_event.py",
    "integration/resilience/test_graceful_stop.py",
}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failure, show the last lines of the logs of the managers started meanwhile."""
    report = yield
    if report.failed and call.when == "call":
        for manager in support.STARTED_MANAGERS[-3:]:
            report.sections.append((f"manager log {manager.url}", manager.log_tail(40)))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the databases the run made that a test did not drop itself; in an xdist worker,
    hand the fault figures to the controller, which prints them."""
    base = support.PG_ADMIN.rsplit("/", 1)[0]
    for name in sorted(support.CREATED_DATABASES):
        support.drop_database(f"{base}/{name}")
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        worker_output["fault_figures"] = json.dumps(
            {"figures": support.FAULT_FIGURES, "verdicts": support.FAULT_VERDICTS}
        )


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist (`make test` runs several workers): gather each worker's fault figures."""
    sent = json.loads(getattr(node, "workeroutput", {}).get("fault_figures", "{}"))
    for name, values in sent.get("figures", {}).items():
        support.FAULT_FIGURES.setdefault(name, []).extend(values)
    support.FAULT_VERDICTS.extend(sent.get("verdicts", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault tests' convergence figures: measured, printed, never asserted."""
    if not support.FAULT_FIGURES and not support.FAULT_VERDICTS:
        return
    terminalreporter.section("fault figures")
    for name, values in sorted(support.FAULT_FIGURES.items()):
        ordered = sorted(values)
        terminalreporter.write_line(
            f"{name}: median {ordered[len(ordered) // 2]:.1f} s, max {ordered[-1]:.1f} s, "
            f"n={len(ordered)}"
        )
    matched = sum(support.FAULT_VERDICTS)
    terminalreporter.write_line(
        f"bots whose final state matched the truth: {matched}/{len(support.FAULT_VERDICTS)}"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier (its folder), and `sql` when its area exercises SQL."""
    for item in items:
        parts = item.path.relative_to(TESTS).parts
        if parts[0] in TIERS:
            item.add_marker(parts[0])
        if "/".join(parts[:2]) in SQL_AREAS and "/".join(parts[:3]) not in NOT_SQL:
            item.add_marker(pytest.mark.sql)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """`http://127.0.0.1:<port>` that refuses connections for the whole test (support.py)."""
    with support.refused_address() as url:
        yield url


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A fresh, migrated database of the kind under test, for tests that call services directly."""
    url = fresh_database_url(tmp_path)
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()
    support.drop_database(url)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """A real Docker Engine with the runtime image built (`make test` sets both up).

    Missing, it fails the tests: the Docker backend's tests must run, never skip.
    """
    import docker

    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker Engine ({exc}); run scripts/docker-engine.sh", pytrace=False)
    try:
        client.images.get(RUNTIME_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {RUNTIME_IMAGE} missing; run scripts/build-images.sh", pytrace=False)
    client.close()
    yield


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    """One manager per test module; each test makes its own user, so tests stay independent."""
    with running_manager(tmp_path_factory.mktemp("manager"), redis_server.url) as instance:
        yield instance


@pytest.fixture(scope="module", params=["process", "docker"])
def any_backend_manager(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
) -> Iterator[Manager]:
    """The same manager, once per backend that can run here; a test module may set
    `MANAGER_ENV` (a dict of settings) for its managers."""
    if request.param == "docker":
        request.getfixturevalue("docker_engine")
    root = tmp_path_factory.mktemp(f"manager-{request.param}")
    env = getattr(request.module, "MANAGER_ENV", None)
    with running_manager(root, redis_server.url, backend=request.param, extra_env=env) as m:
        yield m


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (port 0, the kernel's pick), recording what arrives."""
    instance = Receiver()
    yield instance
    instance.close()
