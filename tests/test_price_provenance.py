"""Price provenance on call rows, through the live gateway: the price row, its rates and its date are
stored with each priced call (ok, fallback, estimated tokens, cache hit) and absent from unpriced or
rejected ones, and they reproduce the stored cost exactly."""

from datetime import timedelta
from decimal import Decimal

from django.test import Client
from django.utils import timezone

from billing.models import Call, Price
from billing.money import usd_json
from billing.price_provenance import price_provenance_of, price_provenance_text
from billing.pricing import cost_for_usage
from tests.conftest import calls_settle
from tests.factories import price_create, route_create

HELLO = [{"role": "user", "content": "hello provenance"}]


def chat(http, model, headers=None, **body):
    return http.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **body}, headers=headers or {})


def page_price(call: Call) -> str:
    """The price block of the call's page, as its owner sees it."""
    client = Client()
    client.force_login(call.user)
    response = client.get(f"/calls/{call.request_id}/")
    assert response.status_code == 200
    html = response.content.decode()
    return html[html.index('id="call-price"') :].split("</div>")[0]


def assert_priced_by(call: Call, price: Price, *, replayed: bool = False) -> None:
    """The call's stored provenance is `price`, and its rates give the stored cost (or saving) exactly."""
    call.refresh_from_db()
    provenance = price_provenance_of(call)
    assert provenance is not None
    assert (provenance.price_id, provenance.effective_from) == (price.id, price.effective_from)
    rates = ("input_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok", "output_per_mtok")
    assert [getattr(provenance, rate) for rate in rates] == [getattr(price, rate) for rate in rates]
    assert provenance.of_replayed_call is replayed
    block = page_price(call)
    assert f"#{price.id}" in block and f"{price.effective_from:%Y-%m-%d %H:%M} UTC" in block
    assert f"${usd_json(price.input_per_mtok)} /1M tokens" in block
    assert f"${usd_json(price.output_per_mtok)} /1M tokens" in block
    write_rate = price.input_per_mtok if price.cache_write_per_mtok is None else price.cache_write_per_mtok
    assert f'data-price="cache_write">${usd_json(write_rate)} /1M tokens' in block
    if not replayed:
        recomputed = cost_for_usage(
            provenance,
            prompt_tokens=call.prompt_tokens,
            cached_tokens=call.cached_tokens,
            cache_write_tokens=call.cache_write_tokens,
            completion_tokens=call.completion_tokens,
        )
        assert recomputed == call.cost_usd > 0


def test_ok_call_keeps_the_price_in_force_not_an_older_or_a_future_one(http, fake_model, recorded_calls):
    model = fake_model("priced", "echo+cached=3")
    now = timezone.now()
    price_create(model=model, input_per_mtok="9", output_per_mtok="9", effective_from=now - timedelta(days=2))
    in_force = price_create(
        model=model,
        input_per_mtok="2.5",
        output_per_mtok="10",
        cached_input_per_mtok="1.25",
        effective_from=now - timedelta(days=1),
    )
    price_create(model=model, input_per_mtok="7", output_per_mtok="7", effective_from=now + timedelta(days=1))

    assert chat(http, "priced").status_code == 200

    (call,) = recorded_calls()
    assert call.cached_tokens == 3
    assert_priced_by(call, in_force)
    text = price_provenance_text(call)
    assert text.startswith(f"price #{in_force.id}, in force from {in_force.effective_from:%Y-%m-%d %H:%M} UTC")
    assert "$2.50 input, $1.25 cached input, $10.00 output per 1M tokens" in text


def test_fallback_keeps_the_price_of_the_model_that_answered(http, fake_model, recorded_calls):
    first = fake_model("flaky", "echo+status=503", price=(5, 20))
    second = fake_model("steady", "echo", price=(1, 2))
    route_create("pair", [first, second])

    assert chat(http, "pair").status_code == 200

    (call,) = recorded_calls()
    assert call.model_id == second.id and call.attempt_count == 2
    assert_priced_by(call, second.prices.get())


def test_estimated_usage_is_priced_and_keeps_its_price(http, fake_model, recorded_calls):
    model = fake_model("silent", "echo+nousage+words=6", price=(3, 15))

    with http.stream("POST", "/v1/chat/completions", json={"model": "silent", "messages": HELLO, "stream": True}) as r:
        assert r.status_code == 200
        r.read()

    (call,) = recorded_calls()
    assert call.usage_estimated
    assert_priced_by(call, model.prices.get())


def test_cache_hit_keeps_the_replayed_calls_price(http, fake_model, recorded_calls):
    model = fake_model("cached-model", "echo+words=4", price=(1, 2))
    headers = {"X-Router-Cache": "true"}
    assert chat(http, "cached-model", headers=headers).headers["X-Router-Cache"] == "miss"
    calls_settle()
    # A new price from now on: the hit's saving is still priced as the replayed call was.
    original_price = model.prices.get()
    price_create(model=model, input_per_mtok="100", output_per_mtok="100")
    assert chat(http, "cached-model", headers=headers).headers["X-Router-Cache"] == "hit"

    original, hit = recorded_calls()
    assert hit.status == "cache_hit" and hit.cost_usd == 0
    assert_priced_by(original, original_price)
    assert_priced_by(hit, original_price, replayed=True)
    assert hit.saved_usd == original.cost_usd
    assert price_provenance_text(hit).startswith(f"the replayed call's price #{original_price.id}")


def test_unpriced_and_rejected_calls_keep_no_price(http, fake_model, recorded_calls):
    fake_model("free-for-now", "echo")

    assert chat(http, "free-for-now").status_code == 200
    assert chat(http, "no-such-model").status_code == 404

    unpriced, rejected = recorded_calls()
    for call in (unpriced, rejected):
        assert (
            call.price_id,
            call.price_input_per_mtok,
            call.price_cached_input_per_mtok,
            call.price_output_per_mtok,
            call.price_effective_from,
        ) == (None, None, None, None, None)
        assert price_provenance_of(call) is None
    assert unpriced.unpriced and unpriced.cost_usd is None
    assert price_provenance_text(unpriced).startswith("no price: the model that answered had none")
    assert rejected.model_id is None and rejected.cost_usd == Decimal(0)
    assert price_provenance_text(rejected).startswith("no price: no model answered")
    assert "No price: the model that answered had none" in page_price(unpriced)
    assert "No price: no model answered" in page_price(rejected)
