"""The API's description through Envoy: the OpenAPI document at ``GET /api/openapi.json`` and
the Swagger UI page at ``GET /api/docs`` (envoy.yaml answers both from files).

The page must work with no internet: the HTTP checks follow every file it refers to, each
from the stack itself, and a real browser (Debian's headless Chromium, driven through
``chromedriver`` by selenium, its name lookups disabled) renders every operation of the
document and calls the stack from it without loading anything from elsewhere. The browser
test saves a screenshot where ``DEVICEHUB_DOCS_SCREENSHOT`` names a file
(``scripts/docs_screenshot.sh``). The browser tests are skipped where Chromium is not
installed, but fail instead under ``DEVICEHUB_REQUIRE_CHROMIUM`` (scripts/test.sh installs
it and sets that).

These are files Envoy answers without a server call, the same whatever the database: the
module runs on the SQLite stack only (every API test runs on both backends elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from devicehub.resources import DOCS_PAGE, OPENAPI_DOCUMENT, SWAGGER_UI_DIR
from devicehub.testing.stack import Stack

pytestmark = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
RENDER_WITHIN = 60  # seconds for Swagger UI to load and list the document's operations
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# What each file the page loads must be sent as, by its name's suffix.
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def document() -> dict:
    return json.loads(OPENAPI_DOCUMENT.read_text())


def operations(spec: dict) -> set[tuple[str, str, str]]:
    """(METHOD, path, operationId) of every operation of the OpenAPI document ``spec``."""
    return {
        (method.upper(), path, item[method].get("operationId", ""))
        for path, item in spec["paths"].items()
        for method in HTTP_METHODS
        if method in item
    }


class _References(HTMLParser):
    """Every URL an HTML page refers to (``src`` and ``href`` attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def page_references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    parser.close()
    return parser.urls


def served_file(name: str) -> Path:
    """The file of this installation that the page's file ``name`` is."""
    ours = DOCS_PAGE.parent / name
    if ours.is_file():
        return ours
    assert SWAGGER_UI_DIR is not None, "swagger-ui-py is not installed"
    return SWAGGER_UI_DIR / name


# --- the document and the page over HTTP ----------------------------------------------------


@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/openapi.json/"])
def test_openapi_document_is_the_generated_file(stack, path):
    response = stack.request("GET", path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == OPENAPI_DOCUMENT.read_bytes()
    assert response.json() == document()
    assert response.json()["openapi"].startswith("3.1")


@pytest.mark.parametrize("path", ["/api/docs", "/api/docs/"])
def test_docs_page_loads_only_files_of_the_stack(stack, path):
    page = stack.request("GET", path)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.content == DOCS_PAGE.read_bytes()
    # The browser itself refuses anything from elsewhere (the browser test shows it works).
    assert "default-src 'none'" in page.headers["content-security-policy"]
    references = page_references(page.text)
    assert {urlsplit(url).path.rsplit("/", 1)[-1] for url in references} == {
        "favicon-32x32.png",
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "docs.js",
    }
    for url in references:
        # A path on this host: no scheme, no other host (//host/...).
        assert url.startswith("/") and not url.startswith("//"), url
        asset = stack.request("GET", urljoin(path, url))
        assert asset.status_code == 200, url
        assert asset.headers["content-type"] == CONTENT_TYPES[Path(url).suffix], url
        assert asset.headers["x-content-type-options"] == "nosniff", url
        assert asset.content == served_file(Path(url).name).read_bytes(), url
    # Nor do our own files name any URL (docs.js loads the document by its path).
    for ours in (DOCS_PAGE, DOCS_PAGE.parent / "docs.js"):
        assert not URL.search(ours.read_text()), ours
    assert "/api/openapi.json" in (DOCS_PAGE.parent / "docs.js").read_text()


def test_head_answers_the_headers_without_the_file(stack):
    response = stack.request("HEAD", "/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == b""


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/openapi.json"),
        ("DELETE", "/api/docs"),
        ("GET", "/api/docs/no-such-file.js"),
        ("GET", "/api/openapi.yaml"),
    ],
)
def test_other_requests_near_the_docs_are_unknown_paths(stack, method, path):
    """Only GET and HEAD of the exact files are answered; the rest is the catch-all's 404 in
    the documented shape of the path's API, as for any unknown path."""
    response = stack.request(method, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Resource not found"}


# --- the page in a real browser -------------------------------------------------------------


@pytest.fixture
def browser(tmp_path) -> Iterator[webdriver.Chrome]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        reason = f"{', '.join(missing)} not installed (Debian: apt-get install chromium "
        "chromium-driver; scripts/test.sh installs them)"
        if os.environ.get("DEVICEHUB_REQUIRE_CHROMIUM"):
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        # As root (CI runs so) Chromium cannot start its sandbox; the page is our own.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1600",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        # No name resolves: the stack is at 127.0.0.1, and a load from anywhere else fails
        # (and shows in the console log) instead of leaving the machine.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path given, selenium never looks for (or downloads) a driver itself.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# Swagger UI's operation rows: (method, path, operationId) of each; an operation is listed
# once under each of its tags.
LISTED_OPERATIONS_SCRIPT = """
return Array.from(document.querySelectorAll('.opblock')).map(block => [
  (block.querySelector('.opblock-summary-method') || {}).textContent || '',
  (block.querySelector('.opblock-summary-path') || {dataset: {}}).dataset.path || '',
  (block.querySelector('.opblock-summary-operation-id') || {}).textContent || '',
]);
"""
# Errors Swagger UI shows when it cannot load or resolve the document.
SWAGGER_ERRORS_SCRIPT = """
return Array.from(document.querySelectorAll('.errors-wrapper, .loading-container .error'))
  .map(node => node.textContent);
"""


def test_swagger_ui_lists_every_operation(stack: Stack, browser: webdriver.Chrome):
    spec = document()
    expected = operations(spec)
    browser.get(stack.url("/api/docs"))

    def listed(driver) -> set[tuple[str, str, str]]:
        return {tuple(row) for row in driver.execute_script(LISTED_OPERATIONS_SCRIPT)}

    def rendered(driver) -> bool:
        return len(listed(driver)) >= len(expected) or bool(
            driver.execute_script(SWAGGER_ERRORS_SCRIPT)
        )

    # On a timeout, the comparisons below say what is missing.
    with contextlib.suppress(TimeoutException):
        WebDriverWait(browser, RENDER_WITHIN, poll_frequency=0.25).until(rendered)
    if screenshot := os.environ.get("DEVICEHUB_DOCS_SCREENSHOT"):
        browser.save_screenshot(screenshot)

    assert browser.execute_script(SWAGGER_ERRORS_SCRIPT) == []
    assert listed(browser) == expected
    title = browser.execute_script(
        "return (document.querySelector('.information-container .title') || {}).textContent"
    )
    assert spec["info"]["title"] in (title or "")
    # Everything the page loaded came from the stack, and nothing was refused or failed.
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)"
    )
    assert any(url.endswith("/api/openapi.json") for url in loaded), loaded
    assert all(url.startswith(stack.rest_url + "/") for url in loaded), loaded
    problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert problems == []


def test_try_it_out_calls_the_stack_from_the_page(stack: Stack, browser: webdriver.Chrome):
    """The page's policy (connect-src 'self') lets "Try it out" reach the stack: Ping from
    the page answers 200 with its documented body."""
    browser.get(stack.url("/api/docs"))
    wait = WebDriverWait(browser, RENDER_WITHIN, poll_frequency=0.25)
    ping = wait.until(
        lambda driver: driver.execute_script(
            "return Array.from(document.querySelectorAll('.opblock')).find(block =>"
            " (block.querySelector('.opblock-summary-path') || {dataset: {}}).dataset.path"
            " === '/api/v1/ping')"
        )
    )
    ping.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait.until(lambda _: ping.find_elements(By.CSS_SELECTOR, ".try-out__btn"))[0].click()
    wait.until(lambda _: ping.find_elements(By.CSS_SELECTOR, ".btn.execute"))[0].click()
    # The table of the answer the page received: one row (under its header row).
    answer = ".live-responses-table tr.response"
    status = wait.until(
        lambda _: ping.find_elements(By.CSS_SELECTOR, f"{answer} .response-col_status")
    )[0]
    assert status.text.strip() == "200"
    body = ping.find_element(By.CSS_SELECTOR, f"{answer} .response-col_description")
    assert '"status": "ok"' in body.text
    assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []
