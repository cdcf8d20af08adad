"""The playground in real headless Chromium, against the live server and the fake upstream.

Nothing is mocked between the page and the upstream: the page's fetch goes to routerweb's session
endpoint, through the gateway's routing, to the fake upstream; call rows and votes are read back
from the database.
"""

import re
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from billing.models import Budget, Call
from routing.models import PreferenceVote

pytestmark = pytest.mark.browser

PROMPT = "Why should a gateway fall back to another provider when one of them returns errors?"

# Records each distinct length of the newest answer's text, with a timestamp, as the DOM changes.
SAMPLE_ANSWER_TEXT = """() => {
  window.__samples = [];
  const transcript = document.getElementById("transcript");
  new MutationObserver(() => {
    const texts = transcript.querySelectorAll(".answer-text");
    const length = texts.length ? texts[texts.length - 1].textContent.length : 0;
    const last = window.__samples[window.__samples.length - 1];
    if (!last || last[1] !== length) window.__samples.push([performance.now(), length]);
  }).observe(transcript, { subtree: true, childList: true, characterData: true });
}"""


def send(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def wait_idle(page: Page, turns: int) -> None:
    """Until `turns` exchanges are on the page and finished, their traces loaded (Send is back)."""
    page.wait_for_function(
        """n => document.querySelectorAll(".turn").length === n
          && !document.querySelector(".answer.is-waiting, .answer.is-streaming")
          && !document.getElementById("send").hidden""",
        arg=turns,
    )


def ms_text(ms: int) -> str:
    """As the page writes durations."""
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def calls_by_request_id(recorded_calls) -> dict[str, Call]:
    return {call.request_id: call for call in recorded_calls()}


# ---------------------------------------------------------------------------- single answers


def test_answer_streams_in_steps_then_shows_tokens_cost_and_speed(playground, user, recorded_calls):
    page = playground
    page.select_option("#target", "llama-3.3-70b")
    page.evaluate(SAMPLE_ANSWER_TEXT)
    send(page, PROMPT)
    wait_idle(page, turns=1)

    samples = page.evaluate("window.__samples")
    growing = [(t, n) for t, n in samples if n > 0]
    assert len({n for _, n in growing}) >= 10, samples  # 30 words 60 ms apart: many steps, not one burst
    assert growing[-1][0] - growing[0][0] > 800, samples
    answer = page.locator(".answer")
    expect(answer.locator(".answer-text")).to_have_text(re.compile(r"^Echo: Why should a gateway .* lorem"))

    (call,) = recorded_calls()
    assert (call.source, call.user_id, call.model.name, call.completion_tokens) == (
        "playground",
        user.id,
        "llama-3.3-70b",
        30,
    )
    meta = answer.locator(".answer-meta")
    expect(meta.locator(".answered-by")).to_have_text("Answered by llama-3.3-70b")
    expect(meta).to_contain_text(f"Tokens{call.prompt_tokens} in · 30 out")
    expect(meta).to_contain_text(f"Cost${call.cost_usd:.6f}")
    expect(meta).to_contain_text(f"Latency{ms_text(call.latency_ms)}")
    expect(meta).to_contain_text(f"TTFT{ms_text(call.ttft_ms)}")
    expect(meta).to_contain_text(re.compile(r"Speed\d+(\.\d)? tok/s"))
    expect(meta.locator(".est")).to_have_count(0)  # the provider reported usage


def test_attempt_chain_when_the_first_model_fails_and_the_fallback_answers(playground):
    page = playground
    page.select_option("#target", "claude-sonnet-4")
    page.select_option("#fallback-add", "qwen-2.5-32b")
    expect(page.locator("#fallbacks li")).to_have_count(1)
    send(page, "Hello from the fallback test")
    wait_idle(page, turns=1)

    attempts = page.locator(".attempts li")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_have_text(re.compile(r"^claude-sonnet-4: 503 from upstream after \d+ ms$"))
    expect(attempts.nth(0)).to_have_class(re.compile(r"\bis-error\b"))
    expect(attempts.nth(1)).to_have_text(re.compile(r"^qwen-2\.5-32b: ok after \d+ ms$"))
    expect(page.locator(".answered-by")).to_have_text("Answered by qwen-2.5-32b instead of claude-sonnet-4")
    expect(page.locator(".answer-text")).to_have_text(re.compile(r"^Echo: Hello from the fallback test"))


def test_route_trace_in_plain_words(playground, screenshot):
    page = playground
    page.select_option("#target", "default")
    page.get_by_label("System prompt").fill("You are a concise assistant for an engineering team.")
    send(page, "Why fall back to another provider when one fails?")
    wait_idle(page, turns=1)
    send(page, "And how should it pick the next provider to try?")
    wait_idle(page, turns=2)

    attempts = page.locator(".turn").last.locator(".attempts li")
    expect(attempts.nth(0)).to_have_text("gpt-4o: skipped, OPENAI_API_KEY not set")
    expect(attempts.nth(1)).to_have_text(re.compile(r"^claude-sonnet-4: 503 from upstream after \d+ ms$"))
    expect(attempts.nth(2)).to_have_text(re.compile(r"^llama-3\.3-70b: ok after \d+ ms$"))
    expect(page.locator(".answered-by").last).to_have_text("Answered by llama-3.3-70b via route default")
    screenshot(page, "playground.png", publish=True)


def test_settings_and_history_reach_the_model_and_new_chat_clears(playground, fake_upstream):
    page = playground
    page.select_option("#target", "qwen-2.5-32b")
    page.get_by_label("System prompt").fill("Answer in one short paragraph.")
    page.get_by_label("Temperature").fill("0.3")
    page.get_by_label("Max tokens").fill("256")
    page.get_by_label("Stream the answer").uncheck()
    send(page, "First question")
    wait_idle(page, turns=1)
    first_answer = page.locator(".answer-text").first.inner_text()
    assert first_answer.startswith("Echo: First question")
    send(page, "Second question")
    wait_idle(page, turns=2)

    sent = fake_upstream.app.stats()["last_request"]
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in one short paragraph."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": "Second question"},
    ]
    assert (sent["temperature"], sent["max_tokens"], sent["stream"]) == (0.3, 256, False)
    expect(page.locator(".turn")).to_have_count(2)

    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".turn")).to_have_count(0)
    expect(page.get_by_text("Ask anything")).to_be_visible()


def test_stop_ends_the_stream_and_the_call_is_still_recorded(playground, recorded_calls):
    page = playground
    page.select_option("#target", "llama-3.3-70b")
    send(page, PROMPT)
    page.wait_for_function("document.querySelector('.answer-text').textContent.length > 20")
    page.get_by_role("button", name="Stop").click()
    wait_idle(page, turns=1)

    answer = page.locator(".answer")
    expect(answer.locator(".answer-status")).to_have_text("stopped")
    expect(answer.locator(".answered-by .tag")).to_have_text("stopped")
    assert 3 < len(answer.locator(".answer-text").inner_text().split()) < 30  # part of the answer, kept
    (call,) = recorded_calls()
    assert call.client_disconnected and call.usage_estimated and 0 < call.completion_tokens < 30


# ---------------------------------------------------------------------------- compare mode


def test_compare_two_models_side_by_side_and_vote(playground, registry, recorded_calls, screenshot):
    page = playground
    page.get_by_role("button", name="Compare").click()
    page.get_by_label("System prompt").fill("You are a concise assistant for an engineering team.")
    columns = page.locator("#columns select")
    expect(columns).to_have_count(2)
    columns.nth(0).select_option("llama-3.3-70b")
    columns.nth(1).select_option("qwen-2.5-32b")
    send(page, PROMPT)
    page.wait_for_function("document.querySelectorAll('.answer.is-streaming').length === 2")  # at once
    wait_idle(page, turns=1)

    answers = page.locator(".answer")
    first, second = answers.nth(0).bounding_box(), answers.nth(1).bounding_box()
    assert first["y"] == second["y"] and first["x"] + first["width"] <= second["x"]  # side by side
    calls = calls_by_request_id(recorded_calls)
    for index in range(2):
        meta = answers.nth(index).locator(".answer-meta")
        call = next(c for c in calls.values() if c.requested == ["llama-3.3-70b", "qwen-2.5-32b"][index])
        expect(meta).to_contain_text(f"Cost${call.cost_usd:.6f}")
        expect(meta).to_contain_text(f"Latency{ms_text(call.latency_ms)}")
        expect(meta).to_contain_text(f"TTFT{ms_text(call.ttft_ms)}")
        expect(meta).to_contain_text("tok/s")

    answers.nth(1).get_by_role("button", name="Better").click()
    expect(answers.nth(1).get_by_role("button", name="✓ Preferred")).to_be_visible()
    expect(page.locator(".vote-note")).to_contain_text("Vote saved: B (qwen-2.5-32b)")
    vote = PreferenceVote.objects.get()
    assert (vote.compared, vote.chosen, vote.chosen_model) == (
        ["llama-3.3-70b", "qwen-2.5-32b"],
        "qwen-2.5-32b",
        registry["qwen-2.5-32b"],
    )
    assert [calls[request_id].requested for request_id in vote.request_ids] == vote.compared
    screenshot(page, "compare.png", publish=True)


# ---------------------------------------------------------------------------- errors and secrets


def test_exceeded_budget_is_shown_inline(playground, user, recorded_calls):
    page = playground
    Budget.objects.create(user=user, limit_usd=Decimal("0.0001"))
    page.select_option("#target", "llama-3.3-70b")
    send(page, PROMPT)
    wait_idle(page, turns=1)

    error = page.locator(".answer-error")
    expect(error).to_be_visible()
    expect(error.locator("strong")).to_have_text("Budget exceeded")
    expect(error).to_contain_text("monthly budget")
    (call,) = recorded_calls()
    assert (call.http_status, call.error_code, call.source) == (429, "budget_exceeded", "playground")


def test_errors_appear_inline_and_the_page_keeps_working(playground, registry):
    page = playground
    page.select_option("#target", "claude-sonnet-4")
    send(page, "nobody answers this")
    wait_idle(page, turns=1)
    expect(page.locator(".answer-error").nth(0)).to_contain_text("All candidates failed")
    expect(page.locator(".attempts").nth(0)).to_contain_text("claude-sonnet-4: 503 from upstream")

    page.select_option("#target", "qwen-2.5-32b")
    registry["qwen-2.5-32b"].delete()  # gone after the page was loaded
    send(page, "a model that was removed")
    wait_idle(page, turns=2)
    expect(page.locator(".answer-error").nth(1)).to_contain_text("Unknown model")
    expect(page.locator(".answer-error").nth(1)).to_contain_text("'qwen-2.5-32b' does not exist")

    page.route("**/playground/api/chat", lambda route: route.abort("connectionreset"))
    page.select_option("#target", "llama-3.3-70b")
    send(page, "the network is down")
    wait_idle(page, turns=3)
    expect(page.locator(".answer-error").nth(2)).to_contain_text("Network error")
    page.unroute("**/playground/api/chat")

    send(page, "and back again")
    wait_idle(page, turns=4)
    expect(page.locator(".answer-text").nth(3)).to_have_text(re.compile(r"^Echo: and back again"))

    page.context.clear_cookies(name="sessionid")  # the session ended in the meantime
    send(page, "still there?")
    wait_idle(page, turns=5)
    expect(page.locator(".answer-error").nth(4)).to_contain_text("You are logged out")
    expect(page.get_by_role("link", name="Log in again")).to_have_attribute(
        "href", "/accounts/login/?next=/playground/"
    )
    assert "Traceback" not in page.content()


def test_the_page_holds_no_provider_key_or_routerweb_key(playground, api_key, provider_secret, fake_upstream):
    page = playground
    responses, request_headers = [], []
    page.on("response", lambda response: responses.append(response))
    page.on("request", lambda request: request_headers.append(request.headers))
    page.reload()
    page.select_option("#target", "llama-3.3-70b")
    send(page, "Is there a secret in here?")
    wait_idle(page, turns=1)
    assert fake_upstream.app.stats()["last_headers"]["authorization"] == f"Bearer {provider_secret}"  # in use

    secrets = [provider_secret, api_key]
    seen = [page.content(), page.evaluate("document.cookie"), page.evaluate("JSON.stringify({...localStorage})")]
    seen += [response.text() for response in responses]
    seen += [str(headers) for headers in request_headers]
    assert len(responses) >= 5  # the page, its stylesheets and script, the chat, the trace
    for text in seen:
        assert not any(secret in text for secret in secrets)
        assert not re.search(r"rw-[A-Za-z0-9_-]{20,}", text)
    assert not any("authorization" in headers for headers in request_headers)


# ---------------------------------------------------------------------------- phone width


def test_layout_fits_a_phone_width(browser, log_in, registry, screenshot):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    try:
        log_in(page)
        expect(page.get_by_label("Model or route")).to_be_hidden()  # settings start folded
        page.get_by_text("Settings", exact=True).click()
        page.get_by_role("button", name="Compare").click()
        send(page, PROMPT)
        wait_idle(page, turns=1)

        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        first, second = page.locator(".answer").nth(0).bounding_box(), page.locator(".answer").nth(1).bounding_box()
        assert second["y"] > first["y"] + first["height"] - 1  # columns stack
        assert first["width"] > 300
        screenshot(page, "playground-390.png", full_page=True)
        screenshot(page, "playground-390-viewport.png")
    finally:
        context.close()
