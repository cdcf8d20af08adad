"""The dashboard as a user meets it: its layout on a desktop and on a phone (no sideways scrolling), how
small money reads, the charts' tables and the searchable filters.

With ROUTERWEB_SCREENSHOTS=1 the README's screenshots are written: docs/dashboard.png (1280×800) and
docs/dashboard-phone.png (390×844), from 40,000 generated calls instead of 3,000.
"""

import io
import json
import os

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from playwright.sync_api import Page

from tests.conftest import calls_settle
from tests.factories import spend_viewers_group, user_create

from .test_dashboard_browser import DRAWN, PASSWORD

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# What sticks out past the viewport's right edge: the page's own width, and every visible block that
# is not inside a scrolling box (the recent-calls table scrolls inside its own box, on purpose).
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const scrolls = (node) => node.closest(".table-wrap");
  const out = [...document.querySelectorAll("body *")].filter((node) => {
    if (scrolls(node) || !node.getClientRects().length) return false;
    return node.getBoundingClientRect().right > width + 0.5;
  }).map((node) => node.tagName.toLowerCase() + (node.id ? "#" + node.id : "") + "." + node.className);
  return { page: document.documentElement.scrollWidth, width, out: out.slice(0, 10) };
}"""
# The labels Chart.js drew on a chart's value axis, after the tick callback.
AXIS_LABELS = """([id, axis]) => Chart.getChart(id).scales[axis].ticks.map((tick) => String(tick.label))"""


@pytest.fixture
def staff_dashboard(page: Page, gateway, log_in_as):
    rows = 40_000 if os.environ.get("ROUTERWEB_SCREENSHOTS") == "1" else 3_000
    call_command("generate_calls", rows=rows, users=40, seed=42, no_progress=True, stdout=io.StringIO())
    root = user_create("root", is_staff=True)
    root.groups.add(spend_viewers_group())
    page.set_default_timeout(15_000)
    log_in_as(page, "/dashboard/", "root", PASSWORD)
    page.wait_for_function(DRAWN, polling=100)
    return page


@pytest.mark.parametrize(
    ("viewport", "shot"), [(DESKTOP, "dashboard.png"), (PHONE, "dashboard-phone.png")], ids=["desktop", "phone"]
)
def test_the_dashboard_fits_the_screen_without_sideways_scrolling(staff_dashboard, viewport, shot, screenshot):
    page = staff_dashboard
    layout = page.evaluate(OVERFLOW)
    assert layout["page"] <= viewport["width"], layout
    assert layout["out"] == [], layout
    for chart in page.eval_on_selector_all("canvas[data-chart]", "nodes => nodes.map(n => n.id)"):
        box = page.locator(f"#{chart}").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], (chart, box)
    screenshot(page, shot, publish=True)


def test_a_tiny_spend_reads_as_distinct_non_zero_amounts(page, gateway, http, user, settings, monkeypatch, log_in_as):
    """A few calls of the demo model (1 and 2 dollars per million tokens) cost thousandths of a cent:
    the card shows the amount, and no two ticks of a money axis read alike."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "DASHSCOPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings.ROUTERWEB_DEMO_PROVIDER = True
    settings.ROUTERWEB_PUBLIC_URL = gateway.url
    call_command("seed_demo", stdout=io.StringIO())
    for words in (1, 4, 9):
        body = {"model": "demo-echo", "messages": [{"role": "user", "content": "hello " * words}], "max_tokens": 5}
        assert http.post("/v1/chat/completions", json=body).status_code == 200
    calls_settle()

    log_in_as(page, "/dashboard/", user.get_username(), "pw-alice-123")
    page.wait_for_function(DRAWN, polling=100)
    spend = page.text_content("#kpi-spend").strip()
    assert spend.startswith("$0.0000") and spend != "$0.00" and any(c in "123456789" for c in spend), spend
    for chart, axis in (("chart-spend-time", "y"), ("chart-spend-model", "x")):
        labels = page.evaluate(AXIS_LABELS, [chart, axis])
        assert len(labels) >= 3, (chart, labels)
        assert len(set(labels)) == len(labels), (chart, labels)  # no "$0 $0 $0"
        assert all(any(c in "123456789" for c in label) for label in labels[1:]), (chart, labels)


def test_every_chart_reads_as_a_table_too(staff_dashboard):
    """Each chart's "Table" button shows its numbers as a table (the chart hidden), and back."""
    page = staff_dashboard
    document = json.loads(page.text_content("#dashboard-data"))
    for chart in page.eval_on_selector_all("canvas[data-chart]", "nodes => nodes.map(n => n.id)"):
        figure = page.locator("figure", has=page.locator(f"#{chart}"))
        toggle = figure.locator(".table-toggle")
        figure.get_by_role("button", name="Table").click()
        assert toggle.get_attribute("aria-pressed") == "true"
        assert page.locator(f"#{chart}").is_hidden() and page.locator(f"#{chart}-table").is_visible()
        assert page.locator(f"#{chart}-table tbody tr").count() > 0
        figure.get_by_role("button", name="Chart").click()
        assert page.locator(f"#{chart}").is_visible() and page.locator(f"#{chart}-table").is_hidden()
    models = page.locator("#chart-spend-model-table tbody tr")
    assert models.count() == len(document["models"])
    first = document["models"][0]
    assert models.nth(0).locator("th").text_content() == first["model"]
    assert models.nth(0).locator("td").text_content().startswith("$")


def test_users_and_keys_are_searched_not_scrolled(staff_dashboard, gateway):
    """The user and key filters are text fields with a list to search (hundreds of users fit), still
    checked by the server: an unknown name is a field error, never a 500."""
    page = staff_dashboard
    usernames = page.eval_on_selector_all("#user-options option", "nodes => nodes.map(n => n.value)")
    assert len(usernames) == get_user_model().objects.count() > 40
    chosen = next(name for name in usernames if name != "root")
    page.fill("#id_user", chosen)
    page.press("#id_user", "Enter")
    page.wait_for_url(f"**/dashboard/?user={chosen}")
    page.wait_for_function(DRAWN, polling=100)
    keys = page.eval_on_selector_all("#key-options option", "nodes => nodes.map(n => n.value)")
    user = get_user_model().objects.get(username=chosen)
    assert sorted(map(int, keys)) == sorted(user.api_keys.values_list("pk", flat=True))

    response = page.goto(f"{gateway.url}/dashboard/?user=no-such-user")
    assert response.status == 400
    assert page.locator("#id_user").input_value() == "no-such-user"
    assert page.locator(".field .error").count() == 1


# Every visible text's contrast with the background it is drawn on (the first opaque one up the tree),
# by WCAG 2's formula; text of 24 px, or 18.66 px bold, is "large" and needs 3:1, the rest 4.5:1.
CONTRAST = """(selector) => {
  // rgb(…)/rgba(…) in 0–255, or color(srgb …) (what color-mix() computes to) in 0–1.
  const rgb = (text) => {
    const parts = (text.match(/[\\d.]+/g) || []).map(Number);
    return text.startsWith("color(srgb") ? parts.map((v, i) => (i < 3 ? v * 255 : v)) : parts;
  };
  const linear = (v) => (v / 255 <= 0.03928 ? v / 255 / 12.92 : ((v / 255 + 0.055) / 1.055) ** 2.4);
  const lum = ([r, g, b]) => 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  const background = (node) => {
    for (let at = node; at; at = at.parentElement) {
      const c = rgb(getComputedStyle(at).backgroundColor);
      if (c.length === 3 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const failures = [];
  for (const node of document.querySelectorAll(selector)) {
    const own = [...node.childNodes].some((child) => child.nodeType === 3 && child.textContent.trim());
    if (!own || !node.getClientRects().length || node.closest("[hidden], .visually-hidden")) continue;
    const style = getComputedStyle(node);
    const fg = rgb(style.color), bg = background(node);
    const [a, b] = [lum(fg.slice(0, 3)), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const text = node.textContent.trim().slice(0, 30);
    if (ratio < needed) failures.push(`${node.tagName}.${node.className} "${text}" ${ratio.toFixed(2)}`);
  }
  return failures;
}"""


def test_text_colours_meet_wcag_aa_contrast(staff_dashboard):
    assert staff_dashboard.evaluate(CONTRAST, ".dash *, .topbar *") == []


# What app.css's dark scheme defines (its owner adds it there); served here on top of the stored app.css.
DARK_VARIABLES = """
@media (prefers-color-scheme: dark) {
  :root { --bg: #111214; --fg: #e8e8ea; --muted: #a3a3ab; --card: #1b1c1f; --border: #303136;
    --accent: #8ea2ff; --ok: #4cc38a; --warn: #e0a040; --bad: #ff6b5e; }
}
"""


def test_the_page_and_its_charts_follow_a_dark_system_setting(staff_dashboard):
    page = staff_dashboard

    def with_dark_variables(route):
        response = route.fetch()
        route.fulfill(response=response, body=response.text() + DARK_VARIABLES)

    page.route("**/static/css/app*.css", with_dark_variables)
    page.emulate_media(color_scheme="dark")
    page.reload()
    page.wait_for_function(DRAWN, polling=100)
    assert page.evaluate("getComputedStyle(document.querySelector('.kpi')).backgroundColor") == "rgb(27, 28, 31)"
    assert page.evaluate("Chart.defaults.color") == "#a3a3ab"  # the charts read the page's colours
    # The dashboard's own text (the top bar is app.css's, drawn from variables this test does not
    # redefine).
    assert page.evaluate(CONTRAST, ".dash *") == []
