"""What the swarm says about bots' services: one service with its newest task and that task's
node (`View`), a listing (one call each for services, tasks and nodes), and where a task's
output and container are read (its node's engine, else the swarm)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from botfleet.orchestrators.base import (
    LABEL_BOT_ID,
    LABEL_MANAGED,
    BackendUnavailable,
    OrchestratorError,
    Workload,
    WorkloadNotFound,
    WorkloadStatus,
)
from botfleet.orchestrators.docker.engine import engine_errors
from botfleet.orchestrators.log_tail import LogLimits
from botfleet.orchestrators.swarm.logs import LogSource, ServiceLogs
from botfleet.orchestrators.swarm.nodes import NodeEngines
from botfleet.orchestrators.swarm.status import (
    OOM_EXIT_CODE,
    doomed,
    latest_task,
    node_name,
    node_state,
    task_exit_code,
    workload_status,
)

_REF = re.compile(r"^[A-Za-z0-9]{1,64}$")
#: Services per task listing filtered by service; more: one listing of every task.
FILTER_MAX = 100

Json = Mapping[str, Any]


def _container_id(task: Json | None) -> str:
    status = (task or {}).get("Status") or {}
    return str((status.get("ContainerStatus") or {}).get("ContainerID") or "")


@dataclass(frozen=True)
class View:
    """One service as the swarm shows it now: its newest task and that task's node."""

    service: Json
    task: Json | None
    node: Json | None
    node_removed: bool

    @property
    def container_id(self) -> str:
        return _container_id(self.task)


class SwarmReader:
    """Reads services, tasks and nodes through the manager's engine (`client`)."""

    def __init__(self, client: Callable[[], docker.DockerClient], engines: NodeEngines) -> None:
        self._client = client
        self.engines = engines
        #: Told of each service whose task Swarm shuts down on its own (`status.doomed`), so
        #: the backend records it before the task's end reads like a bot's own exit.
        self.on_doomed: Callable[[Json], None] | None = None

    def service(self, ref: str) -> Json | None:
        """The service, or None when the swarm positively has none of that id."""
        if not _REF.match(ref):
            return None
        with engine_errors(f"reading service {ref[:12]}"):
            try:
                service = self._client().api.inspect_service(ref)
            except docker.errors.NotFound:
                return None
        return service if service.get("ID") == ref else None  # never a prefix's match

    def view(self, ref: str) -> View | None:
        service = self.service(ref)
        if service is None:
            return None
        api = self._client().api
        with engine_errors(f"reading the task of service {ref[:12]}"):
            task = latest_task(api.tasks(filters={"service": ref}))
            node, removed = None, False
            if task is not None and task.get("NodeID"):
                try:
                    node = api.inspect_node(task["NodeID"])
                except docker.errors.NotFound:
                    removed = True
        if self.on_doomed is not None and doomed(service, task):
            self.on_doomed(service)
        return View(service, task, node, removed)

    def status(self, view: View) -> WorkloadStatus:
        return workload_status(
            view.service,
            view.task,
            view.node,
            node_removed=view.node_removed,
            oom_killed=self._oom_killed(view.task, view.node),
        )

    def _oom_killed(self, task: Json | None, node: Json | None) -> bool:
        """Whether the node's engine says a task that failed with 137 was killed for memory
        (Swarm's task does not say); False when that engine cannot be asked."""
        if task is None or (task.get("Status") or {}).get("State") != "failed":
            return False
        if task_exit_code(task) != OOM_EXIT_CODE or not _container_id(task):
            return False
        try:
            client = self.engines.client_for(node)
            if client is None:
                return False
            with engine_errors("asking a node's engine about an OOM kill"):
                attrs = client.api.inspect_container(_container_id(task))
        except OrchestratorError:
            return False
        return bool((attrs.get("State") or {}).get("OOMKilled"))

    def workloads(self, labels: Mapping[str, str] | None) -> list[Workload]:
        """One listing of services, one of their tasks and one of nodes, whatever the count."""
        wanted = {LABEL_MANAGED: "true", **(labels or {})}
        filters = {"label": [f"{k}={v}" for k, v in wanted.items()]}
        api = self._client().api
        with engine_errors("listing the swarm's services"):
            services = api.services(filters=filters)
            if not services:
                return []
            ids = [str(s["ID"]) for s in services]
            tasks = api.tasks(filters={"service": ids} if len(ids) <= FILTER_MAX else None)
            nodes = {str(n["ID"]): n for n in api.nodes()}
        tasks_of: dict[str, list[Json]] = {}
        for task in tasks:
            tasks_of.setdefault(str(task.get("ServiceID")), []).append(task)
        workloads = []
        for service in services:
            task = latest_task(tasks_of.get(str(service["ID"]), []))
            node_id = str((task or {}).get("NodeID") or "")
            node = nodes.get(node_id) if node_id else None
            status = workload_status(
                service,
                task,
                node,
                node_removed=bool(node_id) and node is None,
                oom_killed=self._oom_killed(task, node),
            )
            if self.on_doomed is not None and doomed(service, task):
                self.on_doomed(service)
            service_labels = dict((service.get("Spec") or {}).get("Labels") or {})
            bot_id = service_labels.get(LABEL_BOT_ID, "")
            workloads.append(Workload(str(service["ID"]), bot_id, service_labels, status))
        return workloads

    def node_container(self, view: View) -> Any | None:
        """The task's container on its node's engine, when botfleet reaches that engine."""
        if not view.container_id:
            return None
        try:
            client = self.engines.client_for(view.node)
            if client is None:
                return None
            with engine_errors("reading a task's container on its node"):
                return client.containers.get(view.container_id)
        except OrchestratorError:
            return None

    def log_source(self, ref: str, limits: LogLimits) -> LogSource | None:
        """Where the task's output is read: its container on its node's engine, else the
        swarm's logs; None while the task has no container (nothing written yet)."""
        view = self.view(ref)
        if view is None:
            raise WorkloadNotFound(f"service {ref[:12]} does not exist")
        if not view.container_id:
            return None
        node = view.node
        if view.node_removed or node is None:
            raise BackendUnavailable(
                "the bot's node was removed from the swarm; its logs stay there"
            )
        client = self.engines.client_for(node)
        if client is not None:
            try:
                with engine_errors(f"reading the container of service {ref[:12]}"):
                    return client.containers.get(view.container_id)
            except WorkloadNotFound:
                pass  # gone from its node: whatever the swarm still has
            except BackendUnavailable as exc:
                raise self.engines.unreachable(node, exc) from exc
        if node_state(node) != "ready":
            raise BackendUnavailable(
                f"node {node_name(node, '')} is {node_state(node)}: its logs cannot be read "
                "through the swarm now (BOTFLEET_SWARM_NODE_ENGINES reads them from its engine)"
            )
        return ServiceLogs(self._client(), ref, limits)
