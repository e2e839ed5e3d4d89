"""Shared helpers for the dashboard's browser tests (real Chromium through Selenium).

Stable names, used by tests/integration/ui/test_ui_*.py of both dashboard halves:

- `browser` (fixture): a headless Chromium (Debian's `chromium` + `chromium-driver`, never a
  download), its own profile in tmp_path, browser console captured. At the end of the test,
  every SEVERE console entry fails it (`assert_no_console_errors`).
- `sign_in(driver, base_url, credential)`: the sign-in form, as a person fills it in.
- `click(driver, css)`: a click that survives a live update replacing the element.
- `wait_for(driver, condition, timeout=..., what=...)`, `wait_text(driver, css, text)`: waits.
- `text_of(driver, css)`: an element's visible text.
- `console_errors(driver)`: the SEVERE console entries since the last call.
- `ui_client(base_url, credential)`: an httpx client already signed in (cookie + CSRF token),
  for tests that need no browser (close it with `contextlib.closing`: it has been used).

The manager itself is tests/conftest.py's `manager` fixture (process backend). Set
BOTFLEET_UI_DUMP to a file name to keep the page's HTML when a wait times out.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _driver(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    if CHROMIUM:
        options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,1000",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium; a SEVERE console entry anywhere in the test fails it."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail(
            "chromium and chromedriver are needed (apt-get install chromium chromium-driver; "
            "scripts/test-services.sh installs them)",
            pytrace=False,
        )
    driver = _driver(tmp_path / "chromium-profile")
    driver.set_page_load_timeout(30)
    try:
        yield driver
        assert_no_console_errors(driver)
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """SEVERE entries of the browser console since the last read."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def assert_no_console_errors(driver: Any) -> None:
    errors = console_errors(driver)
    assert not errors, f"the page logged errors to the console: {errors}"


def wait_for(
    driver: Any, condition: Callable[[Any], T], *, timeout: float = 30, what: str = "condition"
) -> T:
    """`condition(driver)`'s first truthy answer (exceptions count as not yet)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(d: Any) -> T | bool:
        try:
            return condition(d)
        except (WebDriverException, LookupError, ValueError):
            return False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(attempt)  # type: ignore[return-value]
    except Exception as exc:
        if dump := os.environ.get("BOTFLEET_UI_DUMP"):  # the page as it was, for debugging
            Path(dump).write_text(driver.page_source)
        raise AssertionError(
            f"timed out waiting for {what} on {driver.current_url}; "
            f"console: {driver.get_log('browser')}"
        ) from exc


def text_of(driver: Any, css: str) -> str:
    """The visible text of the element at `css` (read again if a live update replaced it)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(4):
        try:
            return str(driver.find_element(By.CSS_SELECTOR, css).text)
        except StaleElementReferenceException:
            continue
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def wait_text(driver: Any, css: str, text: str, *, timeout: float = 30) -> str:
    """Wait until the element at `css` shows `text` (a substring); its whole text."""
    return wait_for(
        driver,
        lambda d: (t := text_of(d, css)) and text in t and t,
        timeout=timeout,
        what=f"{text!r} in {css}",
    )


def click(driver: Any, css: str, *, timeout: float = 10) -> None:
    """Click the element at `css`, again if a live update replaced it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt(d: Any) -> bool:
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(driver, attempt, timeout=timeout, what=f"a click on {css}")


def sign_in(driver: Any, base_url: str, credential: str) -> None:
    """Sign in through the form, as a person would; lands on the fleet page."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/ui/sign-in")
    driver.find_element(By.ID, "credential").send_keys(credential)
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, lambda d: d.current_url.rstrip("/").endswith("/ui"), what="the fleet page")


CSRF_RE = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def ui_client(base_url: str, credential: str) -> tuple[httpx.Client, str]:
    """An httpx client signed in to the dashboard, and its session's CSRF token."""
    client = httpx.Client(base_url=base_url, timeout=30)
    answer = client.post("/ui/sign-in", data={"credential": credential})
    assert answer.status_code == 303, answer.text
    page = client.get("/ui")
    assert page.status_code == 200, page.text
    found = CSRF_RE.search(page.text)
    assert found is not None, "no CSRF token on the fleet page"
    return client, found.group(1)
