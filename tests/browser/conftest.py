"""Browser fixtures: Debian's Chromium driven by Playwright (never `playwright install`), against the live
routerweb server (`gateway`) and the fake upstream, with a registry that looks like a real one.

Screenshots go to a temporary directory; with ROUTERWEB_SCREENSHOTS=1 the ones meant for the docs
(docs/playground.png, docs/compare.png) are written to docs/ instead.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.factories import model_create, provider_create, route_create

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 800}
PASSWORD = "pw-alice-123"  # the `user` fixture's


@pytest.fixture(scope="module")
def browser(gateway_server) -> Iterator[Browser]:
    """One Chromium per test module.

    Module scope on purpose: Playwright's sync API keeps an asyncio loop running in the main thread
    until it stops, and Django refuses ORM calls while a loop is running, so the loop must be gone
    before the next (non-browser) module. `gateway_server` is started first, outside that loop.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (make browser)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(autouse=True)
def orm_beside_playwright(monkeypatch):
    # While Playwright's loop runs in this thread, Django takes the test's own synchronous ORM calls
    # (fixtures, assertions, the database flush after each test) for calls made from async code and
    # refuses them. They are not: nothing here runs inside that loop. Allowed for browser tests only;
    # the API tests exercise the same views without it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def viewport() -> dict[str, int]:
    """The `page` fixture's viewport: a test module overrides this fixture for another size."""
    return DESKTOP


@pytest.fixture
def page(browser, viewport) -> Iterator[Page]:
    """A page in a fresh browser context; the test fails on any JavaScript error it raised."""
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def provider_secret() -> str:
    """The value of GROQ_API_KEY in `registry`: a canary that must never reach a page."""
    return "gsk-canary-provider-secret-0123456789"


@pytest.fixture
def registry(fake_upstream, provider_secret, monkeypatch, transactional_db) -> dict:
    """Providers, models and a route named like real ones, all served by the fake upstream.

    gpt-4o is skipped (OPENAI_API_KEY not set), claude-sonnet-4 answers 503 after 120 ms, the groq
    models stream word by word after a realistic time to first token; "default" routes through all three.
    droppy's stream breaks off after 3 chunks.
    """
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("GROQ_API_KEY", provider_secret)
    base_url = f"{fake_upstream.url}/v1"
    openai = provider_create(name="openai", base_url=base_url, api_key_env="OPENAI_API_KEY")
    anthropic = provider_create(name="anthropic", base_url=base_url, read_timeout_s=5)
    groq = provider_create(name="groq", base_url=base_url, api_key_env="GROQ_API_KEY", read_timeout_s=5)
    models = {
        "gpt-4o": model_create(name="gpt-4o", provider=openai, upstream_model="echo", price=(2.5, 10)),
        "claude-sonnet-4": model_create(
            name="claude-sonnet-4", provider=anthropic, upstream_model="echo+latency=120+status=503", price=(3, 15)
        ),
        "llama-3.3-70b": model_create(
            name="llama-3.3-70b", provider=groq, upstream_model="echo+latency=250+words=30+chunk-delay=60", price=(2, 4)
        ),
        "qwen-2.5-32b": model_create(
            name="qwen-2.5-32b", provider=groq, upstream_model="echo+latency=380+words=22+chunk-delay=80", price=(1, 2)
        ),
    }
    # Streams 3 chunks, then the connection drops.
    model_create(name="droppy", provider=groq, upstream_model="echo+latency=50+words=8+drop=3", price=(1, 2))
    route_create("default", ["gpt-4o", "claude-sonnet-4", "llama-3.3-70b"], description="General chat")
    return models


@pytest.fixture
def log_in_as(gateway) -> Callable[[Page, str, str, str], Page]:
    """`log_in_as(page, "/dashboard/", username, password)`: open the page, get sent to the real login
    form, log in, land on the page."""

    def log_in_page(page: Page, path: str, username: str, password: str) -> Page:
        page.goto(f"{gateway.url}{path}")
        page.wait_for_url(f"**/accounts/login/?next={path}")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"**{path}")
        return page

    return log_in_page


@pytest.fixture
def log_in(log_in_as, user) -> Callable[[Page], Page]:
    """`log_in(page)`: log in as `user` through the playground, and wait for its list of models."""

    def log_in_page(page: Page) -> Page:
        log_in_as(page, "/playground/", user.get_username(), PASSWORD)
        page.wait_for_selector("#target option", state="attached")
        return page

    return log_in_page


@pytest.fixture
def playground(page, log_in, registry) -> Page:
    """The playground at 1280×800, logged in, with the `registry` models."""
    return log_in(page)


@pytest.fixture
def screenshot(tmp_path) -> Callable[..., Path]:
    """`screenshot(page, name, publish=False, full_page=False)` saves a PNG in a temporary directory;
    with ROUTERWEB_SCREENSHOTS=1, the `publish=True` ones are written to docs/ instead."""
    publishing = os.environ.get("ROUTERWEB_SCREENSHOTS") == "1"

    def take(page: Page, name: str, *, publish: bool = False, full_page: bool = False) -> Path:
        path = (REPO_ROOT / "docs" if publish and publishing else tmp_path) / name
        page.screenshot(path=str(path), animations="disabled", caret="hide", full_page=full_page)
        return path

    return take
