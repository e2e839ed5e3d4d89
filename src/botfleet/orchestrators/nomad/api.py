"""Nomad's HTTP API through python-nomad: a client per thread, and its answers in our vocabulary.

A transport error or a 5xx is BackendUnavailable, never "not found"
(https://developer.hashicorp.com/nomad/api-docs). python-nomad keeps requests sessions that are
not meant to be shared across threads, so each thread gets its own client. It also reads some
NOMAD_* variables silently: the ones botfleet cannot override are refused at start-up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import nomad
import nomad.api.exceptions as nomad_errors
import requests

from botfleet.orchestrators.base import BackendUnavailable, OrchestratorError, WorkloadNotFound
from botfleet.orchestrators.nomad.config import NomadOrchestratorConfig
from botfleet.orchestrators.nomad.jobspec import TASK, variable_path
from botfleet.orchestrators.nomad.logs import LogsGone, NodeUnreachable, read_capped

log = logging.getLogger(__name__)

#: A Nomad object (a job, an allocation, an evaluation) as its JSON answer decodes.
NomadObject = dict[str, Any]


class SignalRefused(BackendUnavailable):
    """The ACL token may not signal allocations (it lacks alloc-lifecycle)."""


class ConflictingNomadEnvironment(OrchestratorError):
    """A NOMAD_* variable python-nomad would read silently, with no botfleet setting to win."""


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the Nomad answer behind an error raised by `api_errors`; None for
    a transport error (nothing answered)."""
    cause = exc.__cause__
    resp = getattr(cause, "nomad_resp", None)
    return resp.status_code if isinstance(resp, requests.Response) else None


def answer_text(exc: BaseException) -> str:
    """The body of the Nomad answer behind an error raised by `api_errors` ("" for none)."""
    resp = getattr(exc.__cause__, "nomad_resp", None)
    return resp.text.strip() if isinstance(resp, requests.Response) else ""


def _response_text(exc: nomad_errors.BaseNomadException) -> str:
    resp = exc.nomad_resp
    if isinstance(resp, requests.Response):
        return f"HTTP {resp.status_code}: {resp.text.strip()[:300]}"
    return str(resp)


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Nomad's answers in our vocabulary; a transport error is never "not found"."""
    try:
        yield
    except nomad_errors.URLNotFoundNomadException as exc:
        raise WorkloadNotFound(f"{what}: {_response_text(exc)}") from exc
    except nomad_errors.URLNotAuthorizedNomadException as exc:
        raise BackendUnavailable(
            f"{what}: the ACL token was refused ({_response_text(exc)})"
        ) from exc
    except nomad_errors.BadRequestNomadException as exc:
        raise OrchestratorError(f"{what}: {_response_text(exc)}") from exc
    except nomad_errors.BaseNomadException as exc:
        resp = exc.nomad_resp
        if (
            isinstance(resp, requests.Response)
            and resp.status_code < 500
            and resp.status_code != 429
        ):
            raise OrchestratorError(f"{what}: {_response_text(exc)}") from exc
        raise BackendUnavailable(f"{what}: Nomad does not answer ({_response_text(exc)})") from exc
    except requests.RequestException as exc:  # includes TimeoutNomadException
        raise BackendUnavailable(f"{what}: Nomad does not answer ({exc})") from exc
    except ValueError as exc:  # a body that is not JSON: not Nomad, or a broken proxy
        raise BackendUnavailable(f"{what}: unexpected answer ({exc})") from exc


#: python-nomad falls back to these when its argument is empty; botfleet passes the namespace
#: and the address explicitly (so NOMAD_NAMESPACE / NOMAD_ADDR never apply), but it cannot pass
#: "no token", "no region" or "no client certificate": those variables must not be set alone.
_SILENT_FALLBACKS = {
    "NOMAD_TOKEN": ("token", "BOTFLEET_NOMAD_TOKEN"),
    "NOMAD_REGION": ("region", "BOTFLEET_NOMAD_REGION"),
}


def refuse_silent_environment(cfg: NomadOrchestratorConfig, environ: Mapping[str, str]) -> None:
    """Refuse to start when a NOMAD_* variable would change what botfleet does behind its
    settings' back (python-nomad reads them silently); warn about the ones that are ignored."""
    for variable, (field, setting) in _SILENT_FALLBACKS.items():
        if environ.get(variable) and not getattr(cfg, field):
            raise ConflictingNomadEnvironment(
                f"{variable} is set in the manager's environment but {setting} is not: the "
                f"Nomad client would use it silently. Set {setting} (to the same value, if "
                f"meant) or unset {variable}."
            )
    if environ.get("NOMAD_CLIENT_CERT") and environ.get("NOMAD_CLIENT_KEY"):
        raise ConflictingNomadEnvironment(
            "NOMAD_CLIENT_CERT/NOMAD_CLIENT_KEY are set in the manager's environment: the Nomad "
            "client would present that certificate silently. Unset them."
        )
    for variable, value in (("NOMAD_NAMESPACE", cfg.namespace), ("NOMAD_ADDR", cfg.address)):
        if environ.get(variable) and environ[variable].rstrip("/") != value.rstrip("/"):
            log.warning("%s=%s is ignored: botfleet uses %s", variable, environ[variable], value)


class NomadApi:
    """The calls both launching and watching make, each in our vocabulary."""

    def __init__(self, config: NomadOrchestratorConfig) -> None:
        self.config = config
        self._local = threading.local()

    @property
    def client(self) -> nomad.Nomad:
        """This thread's client, made on first use (a manager starts while Nomad is down)."""
        client: nomad.Nomad | None = getattr(self._local, "client", None)
        if client is None:
            cfg = self.config
            client = nomad.Nomad(
                address=cfg.address.rstrip("/"),
                token=cfg.token,
                namespace=cfg.namespace,
                region=cfg.region,
                timeout=cfg.api_timeout_s,
                verify=cfg.ca_cert or True,
            )
            self._local.client = client
        return client

    def close(self) -> None:
        """Forget this thread's client."""
        if getattr(self._local, "client", None) is not None:
            self._local.client = None

    def namespace(self) -> dict[str, str]:
        """The namespace query parameter, for endpoints python-nomad does not add it to (var)."""
        return {"namespace": self.config.namespace}

    def read_job(self, job_id: str) -> NomadObject:
        with api_errors(f"reading job {job_id}"):
            job: NomadObject = self.client.job.get_job(job_id)
        return job

    def read_alloc(self, alloc_id: str) -> NomadObject:
        """The whole allocation (a listing's stub lacks AllocStates, its job and more)."""
        with api_errors(f"reading allocation {alloc_id[:8]}"):
            alloc: NomadObject = self.client.allocation.get_allocation(alloc_id)
        return alloc

    def allocations(self, job_id: str) -> list[NomadObject]:
        with api_errors(f"reading the allocations of job {job_id}"):
            allocs: list[NomadObject] = self.client.job.get_allocations(job_id) or []
        return allocs

    def signal(self, alloc_id: str, signal: str) -> None:
        """Signal the task; a refused token says which capability it lacks."""
        try:
            with api_errors(f"sending {signal} to allocation {alloc_id[:8]}"):
                self.client.client.allocation.signal_allocation(alloc_id, signal, task=TASK)
        except BackendUnavailable as exc:
            if http_status(exc) == 403:
                raise SignalRefused(
                    f"{exc}: the ACL token needs the alloc-lifecycle capability to signal a bot"
                ) from exc
            raise

    def delete_variable(self, job_id: str) -> None:
        """Delete the job's secrets Variable; one already gone is no error."""
        try:
            with api_errors(f"deleting the variable of job {job_id}"):
                self.client.variable.delete_variable(variable_path(job_id), **self.namespace())
        except WorkloadNotFound:
            pass

    def read_log(self, alloc_id: str, stream: str, origin: str, offset: int, limit: int) -> bytes:
        """At most `limit` bytes of the task's `stream` (see `logs.read_capped`). A task that
        has not started has no logs yet (WorkloadNotFound); logs on a node the servers cannot
        reach are NodeUnreachable; logs Nomad collected are LogsGone (`_missing_logs`)."""
        try:
            with api_errors(f"reading the {stream} of allocation {alloc_id[:8]}"):
                return read_capped(
                    self.client.client.stream_logs,
                    alloc_id,
                    TASK,
                    stream,
                    origin=origin,
                    offset=offset,
                    limit=limit,
                )
        except OrchestratorError as exc:
            missing = _missing_logs(exc, alloc_id)
            if missing is None:
                raise
            raise missing from exc


def _missing_logs(exc: OrchestratorError, alloc_id: str) -> OrchestratorError | None:
    """Why Nomad has no logs to give, as it says it (nomad/client_fs_endpoint.go `logs`,
    client/fs_endpoint.go `logs`, command/agent/fs_endpoint.go): 404 "No path to node" when no
    server holds a connection to the allocation's node (down, or cut off); 404 "Unknown
    allocation" or "state for allocation ... not found on client" once it was collected, 400
    "Unknown node" once its node was; 404 "task ... not started yet" before the task ran (no
    output yet: kept a WorkloadNotFound). None: another error, kept as it is."""
    status, text = http_status(exc), answer_text(exc)
    short = alloc_id[:8]
    if status == 404 and "not started yet" in text:
        return None
    if status == 404 and "No path to node" in text:
        return NodeUnreachable(
            f"the logs of allocation {short} cannot be read: Nomad has no path to its node "
            "(the node is down or cut off from the servers); they can be read once it is back"
        )
    if status == 404 or (status == 400 and "Unknown node" in text):
        return LogsGone(
            f"the logs of allocation {short} are gone: Nomad collected the allocation or its "
            f"node ({text[:200]})"
        )
    return None
