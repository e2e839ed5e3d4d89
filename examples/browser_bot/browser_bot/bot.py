"""A bot that keeps one headless Chromium open, the way a meeting bot does.

It opens `config.url` when it starts and reports what it saw (the page's title and the start
of its visible text), answers `visit`, `title`, `text` and `screenshot`, follows a new `url`
when reconfigured, and closes the browser when it leaves. If the browser dies under it, the bot
ends `failed` with the reason `browser_crashed` and how it died in the detail.

Chromium reserves far more address space than it ever uses (its JavaScript heap's cage alone is
terabytes of reservations), so it dies with SIGTRAP under any address-space limit (RLIMIT_AS),
with nothing in its output saying why. The process backend sets that limit only where it cannot
give a bot a cgroup of its own; this bot checks first and refuses to start with the reason
`address_space_limited`, naming the limit and what to change.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from botfleet.runtime.bot import Bot, BotFailed, command
from browser_bot.cdp import Browser, BrowserError, BrowserGone, Page, address_space_limit
from browser_bot.config import URL, BrowserConfig, check

#: Where the browser is looked for on PATH, in order (Debian's package installs `chromium`).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
#: A screenshot is sent back inline (base64) only up to this size: a command's result is at
#: most 64 KiB of JSON.
INLINE_SCREENSHOT_MAX = 40 * 1024
TITLE_CHARS = 300

#: The bot's own failure reasons (`BotFailed`), besides the runtime's.
ADDRESS_SPACE_LIMITED = "address_space_limited"
BROWSER_NOT_FOUND = "browser_not_found"
BROWSER_FAILED = "browser_failed"
BROWSER_CRASHED = "browser_crashed"
PAGE_UNREACHABLE = "page_unreachable"

VISIT = {
    "type": "object",
    "properties": {"url": URL},
    "required": ["url"],
    "additionalProperties": False,
}
NOTHING = {"type": "object", "additionalProperties": False}
TEXT = {
    "type": "object",
    "properties": {
        "selector": {"type": "string", "maxLength": 200, "description": "A CSS selector."},
        "chars": {"type": "integer", "minimum": 1, "maximum": 8000},
    },
    "additionalProperties": False,
}
SCREENSHOT = {
    "type": "object",
    "properties": {
        "inline": {
            "type": "boolean",
            "description": f"Send the PNG back base64-encoded (up to {INLINE_SCREENSHOT_MAX} "
            "bytes).",
        }
    },
    "additionalProperties": False,
}


class BrowserBot(Bot):
    """Opens a page in headless Chromium and reports what it saw, as a meeting bot joins a call.

    Needs Chromium (Debian's `chromium`) and no address-space limit: on the process backend a
    cgroup per bot (the default where one can be made), on docker an image with Chromium and
    room in /dev/shm.
    """

    kind_name = "browser"
    Config = BrowserConfig
    config: BrowserConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.browser: Browser | None = None
        self.page: Page | None = None
        self.product = ""
        self.visits = 0
        self._page_lock = asyncio.Lock()

    async def on_start(self) -> None:
        limit = address_space_limit()
        if limit is not None:
            raise BotFailed(
                ADDRESS_SPACE_LIMITED,
                f"Chromium cannot run under an address-space limit (RLIMIT_AS is "
                f"{limit // (1024 * 1024)} MiB here; it dies with SIGTRAP reserving its "
                "JavaScript heap). On the process backend run bots in cgroups "
                "(BOTFLEET_PROCESS_CGROUPS=auto or on, where a cgroup can be made: the "
                "memory limit then holds for all the bot's processes together) or set "
                "BOTFLEET_PROCESS_RLIMIT_AS_MB=0.",
            )
        executable = find_browser(self.config.browser)
        try:
            self.browser = await Browser.launch(
                executable, profile_dir=self._profile_dir(), flags=self._flags()
            )
            self.product = (await self.browser.send("Browser.getVersion"))["product"]
            self.page = await self.browser.new_page()
            await self.page.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": self.config.width, "height": self.config.height,
                 "deviceScaleFactor": 1, "mobile": False},
            )  # fmt: skip
            say(f"browser bot: {self.product} (pid {self.browser.pid}) is up")
        except BrowserError as exc:
            await self._close_browser()
            raise BotFailed(BROWSER_FAILED, f"{exc}{sandbox_hint(exc)}") from None
        try:
            await self.visit({"url": self.config.url})
        except BrowserGone as exc:
            await self._close_browser()
            raise BotFailed(BROWSER_CRASHED, exc.why) from None
        except BrowserError as exc:
            await self._close_browser()
            raise BotFailed(PAGE_UNREACHABLE, str(exc)) from None

    def _flags(self) -> list[str]:
        flags = [f"--window-size={self.config.width},{self.config.height}"]
        if not self.config.sandbox or os.geteuid() == 0:  # Chromium refuses root with one
            flags.append("--no-sandbox")
        return flags

    def _profile_dir(self) -> Path:
        """A fresh profile in the bot's working directory (its HOME on the process backend),
        not in /tmp, whose private tmpfs is small and counts as the bot's memory."""
        home = Path(os.environ.get("HOME") or tempfile.gettempdir())
        return Path(tempfile.mkdtemp(prefix="browser-profile-", dir=home))

    async def run(self) -> int | None:
        """Stay until told to leave; a browser that dies meanwhile ends the bot failed."""
        assert self.browser is not None
        leave = asyncio.create_task(self.wait_for_leave())
        try:
            await asyncio.wait({leave, self.browser.ended}, return_when="FIRST_COMPLETED")
        finally:
            leave.cancel()
        if self.leave_requested:
            return None
        raise BotFailed(BROWSER_CRASHED, self.browser.why_gone())

    async def on_reconfigure(self, config: BrowserConfig) -> None:
        if config.url != self.config.url:
            await self.visit({"url": config.url}, config)

    @command("visit", payload=VISIT)
    async def visit(
        self, payload: dict[str, Any], config: BrowserConfig | None = None
    ) -> dict[str, Any]:
        """Open a page; answers (and reports) its title and the start of its text."""
        config = config or self.config
        if errors := check(VISIT, payload):  # the manager checks too; a test harness need not
            raise ValueError("; ".join(f"/{e['loc'][0]}: {e['msg']}" for e in errors))
        page = self._page()
        async with self._page_lock:
            await page.goto(payload["url"], timeout=config.load_timeout_s)
            seen = await page.evaluate(_SEEN_JS % json.dumps(config.text_chars))
        self.visits += 1
        seen = {
            "url": seen["url"],
            "title": seen["title"][:TITLE_CHARS],
            "text": seen["text"],
            "visits": self.visits,
            "browser": self.product,
        }
        say(f"browser bot saw {seen['url']!r}: {seen['title']!r}")
        await self.report(seen)
        return seen

    @command("title", payload=NOTHING)
    async def title(self) -> dict[str, Any]:
        """The current page's title and address."""
        async with self._page_lock:
            seen = await self._page().evaluate("({title: document.title, url: location.href})")
        return {"title": seen["title"][:TITLE_CHARS], "url": seen["url"]}

    @command("text", payload=TEXT)
    async def text(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The visible text of the page, or of the first element matching `selector`."""
        selector = json.dumps(payload.get("selector") or "body")
        chars = int(payload.get("chars", self.config.text_chars))
        script = (
            f"(() => {{ const e = document.querySelector({selector}); "
            f"return e ? e.innerText.slice(0, {chars}) : null; }})()"
        )
        async with self._page_lock:
            found = await self._page().evaluate(script)
        return {"found": found is not None, "text": found or ""}

    @command("screenshot", payload=SCREENSHOT)
    async def screenshot(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A PNG of the viewport: its size and digest (the image itself with `inline`)."""
        async with self._page_lock:
            png = await self._page().screenshot_png()
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        answer: dict[str, Any] = {
            "format": "png",
            "bytes": len(png),
            "width": width,
            "height": height,
            "sha256": hashlib.sha256(png).hexdigest(),
        }
        if payload.get("inline"):
            if len(png) > INLINE_SCREENSHOT_MAX:
                raise ValueError(
                    f"the screenshot is {len(png)} bytes, over the {INLINE_SCREENSHOT_MAX} "
                    "that fit in a command's result; ask without inline, or set a smaller "
                    "width and height"
                )
            answer["data"] = base64.b64encode(png).decode()
        return answer

    def _page(self) -> Page:
        if self.page is None or self.browser is None or self.browser.proc.returncode is not None:
            raise BrowserGone(self.browser.why_gone() if self.browser else "no browser")
        return self.page

    async def on_leave(self) -> None:
        await self._close_browser()
        say("browser bot left: the browser is closed")

    async def _close_browser(self) -> None:
        if self.browser is not None:
            await self.browser.close()


#: What a report says about the page: its address, title and the start of its visible text.
_SEEN_JS = (
    "({url: location.href, title: document.title, "
    "text: (document.body ? document.body.innerText : '').slice(0, %s)})"
)


def find_browser(configured: str | None) -> str:
    """The browser's executable: the configured one, else the first of `BROWSERS` on PATH."""
    for name in [configured] if configured else BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    wanted = configured or " or ".join(BROWSERS)
    raise BotFailed(
        BROWSER_NOT_FOUND,
        f"no {wanted} on PATH ({os.environ.get('PATH', '')}); install Debian's chromium where "
        "the bot runs (on docker: an image FROM botfleet-runtime with it, "
        "examples/browser_bot/Dockerfile)",
    )


def sandbox_hint(exc: BrowserError) -> str:
    if "sandbox" in str(exc).lower():
        return (
            " (Chromium's sandbox needs user namespaces, which this host or container does "
            'not give the bot: start it with "sandbox": false)'
        )
    return ""


def say(line: str) -> None:
    print(line, flush=True)
