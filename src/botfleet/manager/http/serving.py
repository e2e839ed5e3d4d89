"""Serve the manager's two listeners from one process and one event loop.

The API server (`StoppingServer`) runs the app's lifespan; the callback server starts once
that lifespan has built everything (so no callback meets a half-built app), handles no signal
of its own, and stops first: the API server waits for it before the lifespan closes what the
callbacks use (their heartbeats are flushed at that close).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from botfleet.manager.core.listener_health import CALLBACK_LISTENER
from botfleet.manager.core.settings import Settings
from botfleet.manager.http.listeners import (
    BotConnections,
    ConnectionBook,
    PathGate,
    guarded_protocol,
)
from botfleet.manager.http.shutdown import StoppingServer


class _CallbackServer(uvicorn.Server):
    """The bots' listener: signals reach the API server, which stops this one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ManagerServer(StoppingServer):
    """The API server, which starts and stops the callback server with it."""

    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        callbacks: uvicorn.Server,
        callback_sockets: list[socket.socket],
    ) -> None:
        super().__init__(config, app)
        self.callbacks, self._callback_sockets = callbacks, callback_sockets
        self._callback_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._callback_task = asyncio.create_task(
                self.callbacks.serve(sockets=self._callback_sockets)
            )

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.callbacks.should_exit = True
        self.callbacks.force_exit = self.force_exit

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.callbacks.should_exit = True
        if self._callback_task is not None:
            await self._callback_task
        await super().shutdown(sockets)


def listener_config(
    app: object,
    settings: Settings,
    *,
    log_level: str,
    book: ConnectionBook,
    bots: BotConnections | None = None,
    proxy_headers: bool,
    lifespan: str,
) -> uvicorn.Config:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        lifespan=lifespan,  # type: ignore[arg-type]
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: bots on this host could
        # then pick any address for the per-address limits. Only the configured proxies count.
        proxy_headers=proxy_headers,
        forwarded_allow_ips=settings.forwarded_allow_ips or "",
    )
    config.load()
    config.http_protocol_class = guarded_protocol(
        config.http_protocol_class,
        book,
        header_timeout_s=settings.header_timeout_s,
        bots=bots,
    )
    return config


def bind_callback_socket(settings: Settings, fd: int | None) -> socket.socket:
    """The callback listener's socket: the one the caller handed (`--callback-fd`) or one bound
    now on BOTFLEET_HOST:BOTFLEET_CALLBACK_PORT (0: a port the kernel picks)."""
    if fd is not None:
        return socket.socket(fileno=fd)
    probe = uvicorn.Config(lambda: None, host=settings.host, port=settings.callback_port)
    return probe.bind_socket()


def serve_manager(
    api: FastAPI,
    settings: Settings,
    *,
    log_level: str,
    api_sockets: list[socket.socket] | None,
    callback_socket: socket.socket,
) -> None:
    """Serve `api` on the API port and its `/internal/…` routes on the callback socket."""
    api_book = ConnectionBook("API", max_connections=settings.api_max_connections)
    callback_book = ConnectionBook(
        "callback",
        max_connections=settings.callback_max_connections,
        max_per_address=settings.callback_max_connections_per_address,
        health=CALLBACK_LISTENER,
    )
    bots = BotConnections(settings.callback_connections_per_bot)
    api_config = listener_config(
        PathGate(api, internal=False),
        settings,
        log_level=log_level,
        book=api_book,
        proxy_headers=bool(settings.forwarded_allow_ips),
        lifespan="on",
    )
    # Bots call this port directly: no forwarded address is believed here, and a connection is
    # known by its own address and port (`BotConnections`).
    callback_config = listener_config(
        PathGate(api, internal=True, bots=bots),
        settings,
        log_level=log_level,
        book=callback_book,
        bots=bots,
        proxy_headers=False,
        lifespan="off",
    )
    for sock in [*(api_sockets or []), callback_socket]:
        sock.set_inheritable(False)  # the bots it starts must not hold the ports
    server = ManagerServer(
        api_config, api, _CallbackServer(callback_config), callback_sockets=[callback_socket]
    )
    server.run(sockets=api_sockets)
