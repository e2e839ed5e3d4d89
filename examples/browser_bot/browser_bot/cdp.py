"""Headless Chromium driven over its DevTools pipe, with the standard library only.

`--remote-debugging-pipe` makes Chromium read DevTools protocol messages from its fd 3 and
write its answers and events to its fd 4, each message JSON ended by a NUL byte: no port to
pick, nothing another process on the host can connect to, no websocket library. Meeting bots
keep one browser open for the whole meeting; so does this client: one process, one page
(`Page`), commands sent over the pipe until `close()`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import fcntl
import json
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

#: Longest message read from the browser (a full-page screenshot is base64 in one message).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Lines of the browser's stderr kept for a failure's detail.
STDERR_LINES_KEPT = 40
STDERR_LINES_SHOWN = 5
#: Where the pipe's ends are moved before the launcher maps them to 3 and 4: above both, so
#: one can never overwrite the other.
_FD_FLOOR = 10

#: Run by the interpreter in the browser's place: fds argv[1] and argv[2] (both >= _FD_FLOOR,
#: so neither is 3 or 4) become 3 and 4, then the browser replaces it.
_PIPE_LAUNCHER = (
    "import os, sys; a, b = int(sys.argv[1]), int(sys.argv[2]); "
    "os.dup2(a, 3); os.dup2(b, 4); os.close(a); os.close(b); "
    "os.execvp(sys.argv[3], sys.argv[3:])"
)

#: The flags a meeting bot's browser runs with, headless, without a display, audio or a GPU.
BASE_FLAGS = (
    "--headless",
    "--remote-debugging-pipe",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-gpu",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
    "--mute-audio",
    "--password-store=basic",
    "--use-mock-keychain",
    # What meeting bots add so that a page's getUserMedia gets a fake camera and microphone
    # without a permission prompt nobody could answer.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
)


class BrowserError(RuntimeError):
    """The browser answered a command with an error, or did not answer in time."""


class BrowserGone(BrowserError):
    """The browser process ended; `why` says how, with its last lines of stderr."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def describe_exit(returncode: int | None) -> str:
    """How the browser ended, with the one cause the log never names: Chromium dies with
    SIGTRAP (or aborts on ENOMEM) when an address-space limit (RLIMIT_AS) refuses the large
    reservations its V8 heap makes at start, however much memory is actually free."""
    if returncode is None:
        return "the browser is still running"
    if returncode >= 0:
        return f"the browser exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    text = f"the browser was killed by {name}"
    if -returncode in (signal.SIGTRAP, signal.SIGABRT):
        if address_space_limit() is not None:
            text += (
                f" (Chromium does that when it cannot reserve address space: {_limit_text()}; "
                "run it without an address-space limit)"
            )
        else:
            text += " (a check in Chromium failed: see its stderr)"
    elif -returncode == signal.SIGKILL:
        text += " (the OOM killer at the bot's memory limit, or a stop)"
    return text


def address_space_limit() -> int | None:
    """This process's RLIMIT_AS in bytes (inherited by the browser), None when unlimited."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def _limit_text() -> str:
    limit = address_space_limit()
    return "no RLIMIT_AS" if limit is None else f"RLIMIT_AS is {limit // (1024 * 1024)} MiB"


class Browser:
    """One Chromium process and its pipe. Use `launch`, then `new_page`, then `close`."""

    def __init__(
        self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader, write_fd: int
    ) -> None:
        self.proc = proc
        self._reader = reader
        self._write_fd = write_fd
        self._next_id = 0
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._tasks = [
            asyncio.create_task(self._read_messages(), name="cdp-read"),
            asyncio.create_task(self._read_stderr(), name="cdp-stderr"),
        ]
        self.ended = asyncio.create_task(self.proc.wait(), name="cdp-wait")

    @classmethod
    async def launch(
        cls,
        executable: str,
        *,
        profile_dir: Path,
        flags: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Browser:
        """Start `executable` headless with its DevTools pipe on fds 3 and 4."""
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, _FD_FLOOR)
        child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, _FD_FLOOR)
        os.close(to_browser_r)
        os.close(from_browser_w)
        argv = [executable, *BASE_FLAGS, f"--user-data-dir={profile_dir}", *flags, "about:blank"]
        # Popen keeps passed fds at their numbers; a short Python moves them to 3 and 4 and
        # execs the browser (a POSIX shell's `3<&N` takes one digit only).
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-c", _PIPE_LAUNCHER, str(child_in), str(child_out), *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(child_in, child_out),
                env=env,
            )  # fmt: skip
        except BaseException:
            for fd in (to_browser_w, from_browser_r):
                os.close(fd)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_MESSAGE_BYTES, loop=loop)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
            os.fdopen(from_browser_r, "rb", buffering=0),
        )
        return cls(proc, reader, to_browser_w)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def why_gone(self) -> str:
        """How the browser ended, with its last lines of stderr that are not D-Bus noise (a
        headless browser has no session bus to talk to)."""
        lines = [line[-300:] for line in self.stderr_tail if line.strip() and "dbus" not in line]
        tail = " | ".join(lines[-STDERR_LINES_SHOWN:])
        return describe_exit(self.proc.returncode) + (f"; its stderr: {tail}" if tail else "")

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Send one command, return its `result`; BrowserError on an error answer."""
        if self.proc.returncode is not None:
            raise BrowserGone(self.why_gone())
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[self._next_id] = answer
        try:
            try:
                await asyncio.to_thread(self._write, json.dumps(message).encode() + b"\0")
            except BrokenPipeError:
                await asyncio.wait({self.ended}, timeout=5)
                raise BrowserGone(self.why_gone()) from None
            reply = await self._until(answer, timeout, method)
        finally:
            self._answers.pop(message["id"], None)
        if "error" in reply:
            error = reply["error"]
            raise BrowserError(f"{method}: {error.get('message', error)}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def expect(self, method: str, *, session: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event `method` (register it before the command that causes
        it, so an event that comes quickly is not missed); await it with `wait`."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session, future))
        return future

    async def wait(self, event: asyncio.Future[dict[str, Any]], timeout: float) -> dict[str, Any]:
        try:
            return await self._until(event, timeout, "the page to load")
        finally:
            self._waiters = [w for w in self._waiters if w[2] is not event]

    async def _until(self, future: asyncio.Future[Any], timeout: float, what: str) -> Any:
        done, _ = await asyncio.wait(
            {future, self.ended}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        if future in done:
            return future.result()
        if self.ended in done:
            raise BrowserGone(self.why_gone())
        raise BrowserError(f"no answer from the browser within {timeout:g}s waiting for {what}")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._write_fd, view) :]

    async def _read_messages(self) -> None:
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                raw = await self._reader.readuntil(b"\0")
                message = json.loads(raw[:-1])
                if "id" in message:
                    answer = self._answers.get(message["id"])
                    if answer is not None and not answer.done():
                        answer.set_result(message)
                    continue
                for method, session, future in self._waiters:
                    wanted = message.get("method") == method and not future.done()
                    if wanted and session in (None, message.get("sessionId")):
                        future.set_result(message.get("params", {}))

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_tail.append(line.decode(errors="replace").rstrip())

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, target["targetId"], attached["sessionId"])
        await page.send("Page.enable")
        return page

    async def close(self, grace_s: float = 5) -> int | None:
        """Ask the browser to close (its helpers end with it); SIGKILL it after `grace_s`.
        The bot's cgroup makes sure nothing of it outlives the bot either way."""
        if self.proc.returncode is None:
            with suppress(BrowserError, OSError):
                await self.send("Browser.close", timeout=grace_s)
            try:
                await asyncio.wait_for(asyncio.shield(self.ended), grace_s)
            except TimeoutError:
                with suppress(ProcessLookupError):
                    self.proc.kill()
                await self.ended
        for task in self._tasks:
            task.cancel()
        with suppress(OSError):
            os.close(self._write_fd)
        return self.proc.returncode


class Page:
    """One tab, attached with a flat session: commands go to it by `sessionId`."""

    def __init__(self, browser: Browser, target_id: str, session: str) -> None:
        self.browser, self.target_id, self.session = browser, target_id, session

    async def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session, timeout=timeout)

    async def goto(self, url: str, *, timeout: float) -> None:
        """Navigate and wait for the load event; BrowserError when the page cannot be had."""
        loaded = self.browser.expect("Page.loadEventFired", session=self.session)
        navigated = await self.send("Page.navigate", {"url": url}, timeout)
        if navigated.get("errorText"):
            self.browser._waiters = [w for w in self.browser._waiters if w[2] is not loaded]
            raise BrowserError(f"cannot load {url}: {navigated['errorText']}")
        await self.browser.wait(loaded, timeout)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        answer = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"the page's script failed: {text}")
        return answer.get("result", {}).get("value")

    async def screenshot_png(self) -> bytes:
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(shot["data"])
