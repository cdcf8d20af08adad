"""What would it have cost? on the dashboard in headless Chromium: pick a model, compare, and read the
same numbers as the raw call rows give (recomputed here with Decimal), with the estimated-usage note."""

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import Call
from billing.money import usd_text
from billing.services import price_current
from routing.models import ModelEndpoint
from tests.factories import spend_viewers_group, user_create

pytestmark = pytest.mark.browser

PASSWORD = "test-password-1234"  # user_create's


@pytest.fixture
def viewport() -> dict[str, int]:
    return {"width": 1280, "height": 900}


def test_whatif_shows_the_raw_rows_re_priced(page, log_in_as, gateway, screenshot):
    call_command("generate_calls", rows=2_000, users=20, seed=7, no_progress=True, stdout=io.StringIO())
    root = user_create("root", is_staff=True)
    root.groups.add(spend_viewers_group())
    chosen = ModelEndpoint.objects.get(name="gpt-4o-mini")
    price = price_current(model=chosen)
    page.set_default_timeout(15_000)
    log_in_as(page, "/dashboard/", "root", PASSWORD)

    page.get_by_label("Re-price on").select_option("gpt-4o-mini")
    page.get_by_role("button", name="Compare").click()
    result = page.locator("#whatif-result")
    expect(result).to_be_visible()

    # The page's range: the last 30 days of the dashboard's zone (UTC in tests), today included.
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    calls = Call.objects.filter(created_at__gte=today - timedelta(days=29), model__isnull=False).exclude(
        status=Call.Status.CACHE_HIT
    )
    now = chosen_cost = Decimal(0)
    estimated = 0
    cached_rate = price.input_per_mtok if price.cached_input_per_mtok is None else price.cached_input_per_mtok
    for call in calls:
        estimated += call.usage_estimated
        if call.cost_usd is None:
            continue
        now += call.cost_usd
        chosen_cost += (
            (call.prompt_tokens - call.cached_tokens) * price.input_per_mtok
            + call.cached_tokens * cached_rate
            + call.completion_tokens * price.output_per_mtok
        ) / 1_000_000
    total = page.locator("#whatif-total td")
    expect(total.nth(2)).to_have_text(usd_text(now))
    expect(total.nth(3)).to_have_text(usd_text(chosen_cost))
    difference = chosen_cost - now
    expect(total.nth(4)).to_have_text(("+" if difference > 0 else "") + usd_text(difference))
    expect(page.locator("#whatif-chosen-head")).to_have_text("On gpt-4o-mini")
    assert estimated > 0
    expect(page.locator("#whatif-note")).to_contain_text(f"{estimated:,} of these calls had no usage")
    assert page.locator("#whatif-rows tr").count() > 2
    page.locator("#whatif").scroll_into_view_if_needed()
    screenshot(page, "whatif.png", publish=True)
