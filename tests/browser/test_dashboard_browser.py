"""The dashboard in headless Chromium: log in, every chart drawn, filters redraw them, the CSV downloads.

The README's screenshots are taken by test_dashboard_layout.py.
"""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count
from playwright.sync_api import Page

from billing.models import Call
from routing.models import ModelEndpoint, PreferenceVote
from tests.factories import spend_viewers_group, user_create

pytestmark = pytest.mark.browser

PASSWORD = "test-password-1234"  # user_create's
STAFF_CHARTS = [
    "chart-spend-time",
    "chart-traffic",
    "chart-spend-model",
    "chart-spend-user",
    "chart-spend-key",
    "chart-latency",
    "chart-rates",
    "chart-votes",
]

# Share of a canvas's pixels that are painted (anything not fully transparent).
PAINTED = """(id) => {
  const canvas = document.getElementById(id);
  const { width, height } = canvas;
  const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted += 1;
  return painted / (width * height);
}"""
# Every chart's canvas has been painted (axes at least): what a user sees once the charts are drawn.
DRAWN = """() => [...document.querySelectorAll("canvas[data-chart]")].every((canvas) => {
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) return true;
  return false;
})"""


@pytest.fixture
def generated(gateway):
    rows = 3_000
    call_command("generate_calls", rows=rows, users=40, seed=42, no_progress=True, stdout=io.StringIO())
    return rows


@pytest.fixture
def viewport() -> dict[str, int]:
    return {"width": 1280, "height": 900}


@pytest.fixture
def dashboard(page, log_in_as, generated):
    """`open(username)` logs in through the real form and lands on the dashboard, its charts drawn."""
    page.set_default_timeout(15_000)

    def open_as(username: str) -> Page:
        log_in_as(page, "/dashboard/", username, PASSWORD)
        wait_for_charts(page)
        return page

    return open_as


def wait_for_charts(page: Page) -> None:
    """Until every chart is drawn, from the document embedded in the page: no request for data.json."""
    page.wait_for_function(DRAWN, polling=100)
    resources = page.evaluate("performance.getEntriesByType('resource').map(entry => entry.name)")
    assert not [url for url in resources if "/dashboard/data.json" in url]


def chart_ids(page: Page) -> list[str]:
    return page.eval_on_selector_all("canvas[data-chart]", "nodes => nodes.map(n => n.id)")


def assert_all_drawn(page: Page, *, sparse: tuple[str, ...] = ()) -> None:
    """Every chart paints more than its axes (`sparse` ones may hold a thin bar or two) and shows no
    "nothing in this range" note."""
    for chart in chart_ids(page):
        painted = page.evaluate(PAINTED, chart)
        assert painted > (0.002 if chart in sparse else 0.02), (chart, painted)  # bars, not just axes
        box = page.locator(f"#{chart}").locator("xpath=..")
        assert box.locator(".chart-empty").count() == 0, chart


def embedded_document(page: Page) -> dict:
    """The JSON document the page carries and draws its charts from."""
    return json.loads(page.text_content("#dashboard-data"))


def spend_series(page: Page) -> list[list]:
    """The spend-over-time chart's series: (model, number of buckets) each."""
    series = embedded_document(page)["spend_over_time"]["series"]
    return [[s["model"], len(s["spend_usd"])] for s in series]


def snapshot(page: Page, chart: str) -> str:
    return page.evaluate("(id) => document.getElementById(id).toDataURL()", chart)


def test_spend_viewers_see_every_chart_drawn_and_filters_redraw_them(dashboard):
    root = user_create("root", is_staff=True)
    root.groups.add(spend_viewers_group())
    # The generated votes are random: make sure the one-model week below has one.
    PreferenceVote.objects.create(
        user=root,
        compared=["gpt-4o", "gpt-4o-mini"],
        chosen="gpt-4o",
        chosen_model=ModelEndpoint.objects.get(name="gpt-4o"),
        request_ids=["vote-a", "vote-b"],
        comparison_key="vote-a,vote-b",
    )
    page = dashboard("root")
    assert chart_ids(page) == STAFF_CHARTS
    assert_all_drawn(page)
    before = spend_series(page)
    assert len(before) > 3 and all(length == 30 for _, length in before)
    drawn_before = snapshot(page, "chart-spend-time")

    page.select_option("#id_range", "7d")  # applies itself: the page reloads with ?range=7d
    page.wait_for_url("**/dashboard/?range=7d")
    wait_for_charts(page)
    assert_all_drawn(page)
    assert all(length == 7 for _, length in spend_series(page))
    assert snapshot(page, "chart-spend-time") != drawn_before  # redrawn for the new range
    assert "– " in page.text_content(".dash-range")

    page.select_option("#id_model", "gpt-4o")
    page.wait_for_url("**/dashboard/?range=7d&model=gpt-4o")
    wait_for_charts(page)
    assert_all_drawn(page, sparse=("chart-votes",))  # one model's votes in 7 days: a few, maybe one bar
    assert spend_series(page) == [["gpt-4o", 7]]
    assert [m["model"] for m in embedded_document(page)["models"]] == ["gpt-4o"]

    with page.expect_download() as download_info:
        page.click("#export-link")
    download = download_info.value
    assert download.suggested_filename.startswith("routerweb-calls-")
    with open(download.path(), newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    expected = Call.objects.filter(
        created_at__gte=today - timedelta(days=6), created_at__lt=today + timedelta(days=1), model__name="gpt-4o"
    )
    assert len(rows) == expected.count() > 0
    assert {r["model"] for r in rows} == {"gpt-4o"}
    assert list(rows[0]) == [
        "created_at", "request_id", "user", "api_key", "requested", "model", "provider", "kind", "status",
        "prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens", "usage_estimated", "cost_usd",
        "saved_usd", "latency_ms", "ttft_ms", "attempts",
    ]  # fmt: skip


def test_a_user_sees_their_own_charts_and_is_refused_others(dashboard, gateway):
    since = datetime.now(UTC) - timedelta(days=29)
    voters = (
        PreferenceVote.objects.filter(created_at__gte=since)
        .values("user__username")
        .annotate(n=Count("id"))
        .order_by("-n", "user__username")
    )
    member = get_user_model().objects.get(username=voters[0]["user__username"])
    other = get_user_model().objects.exclude(pk=member.pk).filter(is_staff=False).first()
    member.set_password(PASSWORD)
    member.save()
    page = dashboard(member.get_username())
    assert chart_ids(page) == [c for c in STAFF_CHARTS if c != "chart-spend-user"]
    assert_all_drawn(page)
    assert page.locator("#id_user").count() == 0
    response = page.goto(f"{gateway.url}/dashboard/?user={other.get_username()}")
    assert response.status == 400  # as for a user that does not exist
    assert page.goto(f"{gateway.url}/dashboard/?user=no-such-user").status == 400
