"""The API docs (`/docs`, `/redoc`) work offline: every asset they load comes from the manager."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from tests.support import Manager


class Links(HTMLParser):
    """The URLs a page makes the browser load: scripts, stylesheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.icons: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.scripts.append(found["src"] or "")
        elif tag == "link" and found.get("href"):
            rel = (found.get("rel") or "").split()
            target = self.icons if "icon" in rel else self.styles
            target.append(found["href"] or "")


def page(manager: Manager, path: str) -> tuple[str, Links]:
    response = httpx.get(f"{manager.url}{path}", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    links = Links()
    links.feed(response.text)
    return response.text, links


def assert_same_origin_everywhere(manager: Manager, html: str) -> None:
    """No absolute URL in the page names another host (a CDN, Google Fonts, ...)."""
    for url in re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", html):
        assert urlsplit(url).netloc == urlsplit(manager.url).netloc, f"off-host URL {url}"


def fetch_asset(manager: Manager, page_path: str, ref: str, kind: str) -> bytes:
    url = urljoin(f"{manager.url}{page_path}", ref)
    assert urlsplit(url).netloc == urlsplit(manager.url).netloc, f"{ref} is not on the manager"
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, f"{url}: {response.status_code}"
    assert kind in response.headers["content-type"], (url, response.headers["content-type"])
    return response.content


def test_swagger_ui_loads_everything_from_the_manager(manager: Manager) -> None:
    html, links = page(manager, "/docs")
    assert_same_origin_everywhere(manager, html)
    assert links.scripts and links.styles and links.icons, html

    scripts = [fetch_asset(manager, "/docs", src, "javascript") for src in links.scripts]
    bundle = next((js for js in scripts if b"SwaggerUIBundle" in js), b"")
    assert len(bundle) > 500_000, "the Swagger UI bundle is missing or truncated"
    # Swagger UI renders OpenAPI 3.1 (what FastAPI emits) from version 5 on.
    version = re.search(rb'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', bundle)
    assert version and int(version[1]) >= 5, version
    for href in links.styles:
        assert len(fetch_asset(manager, "/docs", href, "text/css")) > 50_000
    for href in links.icons:
        assert fetch_asset(manager, "/docs", href, "image/").startswith(b"\x89PNG")

    # The page's script loads this manager's schema.
    configured = re.search(r"""\burl:\s*['"]([^'"]+)['"]""", html)
    assert configured and configured[1] == "/openapi.json", html
    schema = httpx.get(urljoin(f"{manager.url}/docs", configured[1]), timeout=10).json()
    assert schema["openapi"].startswith("3.1") and schema["info"]["title"] == "botfleet"


def test_redoc_loads_everything_from_the_manager(manager: Manager) -> None:
    html, links = page(manager, "/redoc")
    assert_same_origin_everywhere(manager, html)
    assert "fonts.googleapis" not in html
    (script,) = links.scripts
    assert len(fetch_asset(manager, "/redoc", script, "javascript")) > 500_000
    for href in links.icons + links.styles:
        assert fetch_asset(manager, "/redoc", href, "image/").startswith(b"\x89PNG")
    assert 'spec-url="/openapi.json"' in html


def rendered(url: str, tmp_path: Path) -> str:
    """The page's DOM after a real, headless Chromium (Debian's package) ran its scripts,
    with every connection off the loopback refused as on a closed network."""
    browser = shutil.which("chromium")
    assert browser, "chromium is missing; scripts/test-services.sh installs it"
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_docs_render_in_a_real_browser_offline(manager: Manager, tmp_path: Path) -> None:
    swagger = rendered(f"{manager.url}/docs", tmp_path)
    assert re.search(r'class="title">botfleet', swagger), swagger[-2000:]
    assert "OAS 3.1" in swagger
    # Every route is listed as an operation a user can open.
    assert swagger.count('class="opblock-summary-path"') >= 20
    redoc = rendered(f"{manager.url}/redoc", tmp_path)
    assert "botfleet" in redoc and "/bots/{bot_id}/config" in redoc
