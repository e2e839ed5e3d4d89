"""Talking to the Docker Engine: the SDK's client, and its errors in the shared vocabulary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker
import docker.errors
import requests.exceptions

from botfleet.orchestrators.base import BackendUnavailable, OrchestratorError, WorkloadNotFound
from botfleet.orchestrators.docker.config import DockerOrchestratorConfig


@contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Transport failures become BackendUnavailable, never "not found"."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise WorkloadNotFound(f"{what}: {exc.explanation or exc}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise BackendUnavailable(f"{what}: the Docker Engine does not answer ({exc})") from exc
    except docker.errors.APIError as exc:
        if exc.status_code is not None and exc.status_code >= 500:
            raise BackendUnavailable(f"{what}: {exc.explanation or exc}") from exc
        raise OrchestratorError(f"{what}: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise BackendUnavailable(f"{what}: {exc}") from exc


def connect(config: DockerOrchestratorConfig) -> docker.DockerClient:
    """A client of the configured engine (`base_url`, else DOCKER_HOST or the local socket)."""
    timeout = int(config.api_timeout_s)
    with engine_errors("connecting to the Docker Engine"):
        if config.base_url:
            return docker.DockerClient(base_url=config.base_url, timeout=timeout, version="auto")
        return docker.from_env(timeout=timeout)
