"""The stand-in's HTTP side: the server, the checks of our requests, routing, and test hooks.

Every request is recorded (`StandIn.requests`) so tests can assert on what the backend sent;
each route hands its work to the module of its concern (scheduler, variables, logs).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.nomad_standin import nodes, scheduler
from tests.nomad_standin.logs import StreamFailed, read_logs
from tests.nomad_standin.state import NODE_ID, Alloc, ApiError, Cluster, Job, parse_bool
from tests.nomad_standin.variables import handle_variable

_NAMESPACED = ("/v1/jobs", "/v1/job/", "/v1/allocation", "/v1/client/", "/v1/var/")


class Answered(Exception):
    """A JSON answer with a status other than 200 (Nomad's 409 on a variable conflict)."""

    def __init__(self, status: int, answer: Any) -> None:
        super().__init__(status)
        self.status, self.answer = status, answer


@dataclass
class Recorded:
    """One request as the stand-in received it, with the status and body it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0
    answer: str = ""


class StandIn:
    """The server; `start()` it, `stop()` it (kills every task process)."""

    NODE_ID = NODE_ID

    def __init__(
        self,
        workdir: Path,
        *,
        token: str | None = None,
        namespace: str | None = None,
        region: str | None = None,
        placement_delay_s: float = 0.3,
        image_command: list[str] | None = None,
        datacenter: str = "dc1",
        cpu_mhz: int = 100_000,
        memory_mb: int = 262_144,
        task_start_delay_s: float = 0.1,
        report_delay_s: float = 0.0,
    ) -> None:
        self.workdir = workdir
        self.token = token
        self.namespace = namespace
        self.region = region
        self.cluster = Cluster(
            workdir,
            region=region,
            placement_delay_s=placement_delay_s,
            image_command=image_command,
            datacenter=datacenter,
            cpu_mhz=cpu_mhz,
            memory_mb=memory_mb,
            task_start_delay_s=task_start_delay_s,
            report_delay_s=report_delay_s,
        )
        #: When set, every request is answered with this status (e.g. 500): an outage.
        self.fail_with: int | None = None
        #: (method, path prefix) -> the status those requests alone are answered with.
        self.fail_requests: dict[tuple[str, str], int] = {}
        self.requests: list[Recorded] = []
        #: (method, path prefix) -> what to do once, just before the next such request is
        #: answered (another client acting in between two of ours).
        self.before_next: dict[tuple[str, str], Callable[[], None]] = {}
        self.jobs = self.cluster.jobs
        self.variables = self.cluster.variables
        self._server: ThreadingHTTPServer | None = None

    # ---- server ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StandIn:
        self.workdir.mkdir(parents=True, exist_ok=True)
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                standin._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Shut the server down and kill every task process still running."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        scheduler.shut_down(self.cluster)

    def cleanup(self) -> None:
        """Remove the allocation directories (logs, rendered secrets)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- test hooks --------------------------------------------------------------------------

    def job(self, job_id: str, namespace: str | None = None) -> Job | None:
        with self.cluster.lock:
            return self.jobs.get((namespace or self._ns_or_default(), job_id))

    def variable(self, path: str, namespace: str | None = None) -> dict[str, Any] | None:
        with self.cluster.lock:
            return self.variables.get((namespace or self._ns_or_default(), path))

    def alloc_of(self, job_id: str) -> Alloc | None:
        job = self.job(job_id)
        return job.allocs[-1] if job and job.allocs else None

    def lose(self, job_id: str) -> None:
        """The node running the job's allocation went away: the process dies, the alloc is lost."""
        alloc = self.alloc_of(job_id)
        assert alloc is not None, f"job {job_id} has no allocation"
        nodes.lose(self.cluster, alloc)

    def disconnect(self, job_id: str) -> None:
        """The node running the job's allocation stops talking to the servers; the task runs
        on (see `nodes.disconnect`)."""
        alloc = self.alloc_of(job_id)
        assert alloc is not None, f"job {job_id} has no allocation"
        nodes.disconnect(self.cluster, alloc)

    def collect(self, job_id: str) -> None:
        """The client of the job's allocation garbage-collected it: its logs are gone."""
        alloc = self.alloc_of(job_id)
        assert alloc is not None, f"job {job_id} has no allocation"
        nodes.collect(self.cluster, alloc)

    def break_log_stream(self, job_id: str, error: str) -> None:
        """The next log read of the job's allocation fails after its first frame with `error`
        (in the 200 answer, as Nomad's HTTP layer writes it)."""
        alloc = self.alloc_of(job_id)
        assert alloc is not None, f"job {job_id} has no allocation"
        with self.cluster.lock:
            alloc.log_error = error

    def deny(self, capability: str) -> None:
        """The ACL token loses `capability` (e.g. "alloc-lifecycle"): such calls answer 403."""
        with self.cluster.lock:
            self.cluster.denied.add(capability)

    def live_tasks(self, job_id: str) -> list[Alloc]:
        """The job's allocations whose task process is really running (whatever Nomad says)."""
        job = self.job(job_id)
        return [a for a in (job.allocs if job else []) if a.proc and a.proc.poll() is None]

    def requests_to(self, method: str, path_prefix: str) -> list[Recorded]:
        with self.cluster.lock:
            return [
                r for r in self.requests if r.method == method and r.path.startswith(path_prefix)
            ]

    # ---- HTTP plumbing -----------------------------------------------------------------------

    def _ns_or_default(self) -> str:
        return self.namespace or "default"

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        record = Recorded(handler.command, path, query, dict(handler.headers.items()), None)
        status, content_type, body = 200, "application/json", ""
        data: bytes | None = None  # a file's bytes, answered as they are (as Nomad does)
        try:
            if raw:
                try:
                    record.body = json.loads(raw)
                except ValueError as exc:
                    raise ApiError(400, f"failed to decode request body: {exc}") from exc
            if self.fail_with is not None:
                raise ApiError(self.fail_with, "stand-in: simulated failure")
            for (method, prefix), status_code in list(self.fail_requests.items()):
                if handler.command == method and path.startswith(prefix):
                    raise ApiError(status_code, "rpc error: No cluster leader")
            for (method, prefix), action in list(self.before_next.items()):
                if handler.command == method and path.startswith(prefix):
                    del self.before_next[(method, prefix)]
                    action()
            self._check_request(handler.command, path, query, handler.headers.get("X-Nomad-Token"))
            result = self._route(handler.command, path, query, record.body)
            if isinstance(result, tuple):  # Stream Logs: (bytes, content type)
                # The plain answer names no charset (command/agent/fs_endpoint.go `Logs`).
                data, content_type = result
                body = data.decode(errors="replace")
            else:
                body = json.dumps(result)
        except StreamFailed as exc:
            # The stream began (200), then failed: its error follows what was sent, in the
            # same body (command/agent/fs_endpoint.go `fsStreamImpl`, http.go `wrap`).
            data, content_type = exc.sent + exc.error.encode(), "application/json"
            body = data.decode(errors="replace")
        except Answered as exc:
            status, body = exc.status, json.dumps(exc.answer)
        except ApiError as exc:
            status, content_type, body = exc.status, "text/plain; charset=utf-8", str(exc)
        record.status, record.answer = status, body
        with self.cluster.lock:
            self.requests.append(record)
        if data is None or status != 200:
            data = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("X-Nomad-Index", str(self.cluster.index))
        handler.send_header("X-Nomad-KnownLeader", "true")
        handler.send_header("X-Nomad-LastContact", "0")
        handler.end_headers()
        handler.wfile.write(data)

    def _check_request(
        self, method: str, path: str, query: dict[str, str], token: str | None
    ) -> None:
        if self.token is not None and path != "/v1/status/leader" and token != self.token:
            raise ApiError(403, "Permission denied")
        if (
            self.namespace
            and path.startswith(_NAMESPACED)
            and query.get("namespace") != self.namespace
        ):
            raise ApiError(400, f"stand-in: request without namespace={self.namespace}")
        if self.region and query.get("region") != self.region:
            raise ApiError(400, f"stand-in: request without region={self.region}")

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        # Nomad takes the namespace from the `namespace` query parameter, `default` without one
        # (https://developer.hashicorp.com/nomad/api-docs#namespaces).
        cluster, ns = self.cluster, query.get("namespace") or "default"
        if (method, path) == ("GET", "/v1/status/leader"):
            return "127.0.0.1:4647"
        if path == "/v1/jobs":
            if method == "GET":
                return scheduler.list_jobs(cluster, ns, query)
            if method == "POST":
                return scheduler.register(cluster, ns, body)
        if match := re.fullmatch(r"/v1/job/([^/]+)/allocations", path):
            if method == "GET":
                with cluster.lock:
                    job = cluster.jobs.get((ns, match.group(1)))
                    return [a.stub() for a in job.allocs] if job else []
        elif match := re.fullmatch(r"/v1/job/([^/]+)/evaluations", path):
            if method == "GET":
                with cluster.lock:
                    return [
                        dict(e)
                        for e in cluster.evals.values()
                        if (e["Namespace"], e["JobID"]) == (ns, match.group(1))
                    ]
        elif match := re.fullmatch(r"/v1/evaluation/([^/]+)", path):
            if method == "GET":
                with cluster.lock:
                    evaluation = cluster.evals.get(match.group(1))
                    if evaluation is None:
                        raise ApiError(404, "eval not found")
                    return dict(evaluation)
        elif match := re.fullmatch(r"/v1/job/([^/]+)", path):
            if method == "GET":
                with cluster.lock:
                    return cluster.get_job(ns, match.group(1)).read()
            if method == "DELETE":
                purge = parse_bool(query.get("purge"), "purge")
                return scheduler.deregister(cluster, ns, match.group(1), purge)
        elif match := re.fullmatch(r"/v1/allocation/([^/]+)", path):
            if method == "GET":
                with cluster.lock:
                    alloc = cluster.get_alloc(match.group(1))
                    job = cluster.jobs.get((alloc.namespace, alloc.job_id))
                    return {**alloc.full(), "Job": job.read() if job else None}
        elif match := re.fullmatch(r"/v1/client/allocation/([^/]+)/signal", path):
            if method == "POST":
                return scheduler.signal_alloc(cluster, match.group(1), body or {})
        elif match := re.fullmatch(r"/v1/client/fs/logs/([^/]+)", path):
            if method == "GET":
                return read_logs(cluster, match.group(1), query)
        elif match := re.fullmatch(r"/v1/var/(.+)", path):
            status, answer = handle_variable(cluster, method, ns, match.group(1), body, query)
            if status != 200:
                raise Answered(status, answer)
            return answer
        raise ApiError(404, f"stand-in: no route for {method} {path}")
