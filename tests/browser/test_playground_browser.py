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
from billing.money import usd_text
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
    expect(meta).to_contain_text(f"Cost{usd_text(call.cost_usd)}")
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
        expect(meta).to_contain_text(f"Cost{usd_text(call.cost_usd)}")
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


# ---------------------------------------------------------------------------- layout: desktop and phone

NO_HORIZONTAL_OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wider = [...document.querySelectorAll("body *")].filter((el) => {
    const box = el.getBoundingClientRect();
    const outside = box.right > width + 0.5 || box.left < -0.5;
    return box.width > 0 && outside && !el.closest(".visually-hidden, dialog:not([open])");
  });
  const scroll = document.documentElement.scrollWidth;
  return { scroll, width, wider: wider.slice(0, 5).map((el) => el.outerHTML.slice(0, 80)) };
}"""

# Whether a text field's placeholder fits on its line, measured with the field's own font.
PLACEHOLDER_FITS = """(id) => {
  const field = document.getElementById(id);
  const style = getComputedStyle(field);
  const context = document.createElement("canvas").getContext("2d");
  context.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const room = field.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return context.measureText(field.placeholder).width <= room;
}"""


def assert_no_horizontal_overflow(page: Page) -> None:
    result = page.evaluate(NO_HORIZONTAL_OVERFLOW)
    assert result["scroll"] <= result["width"] and not result["wider"], result


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_desktop_layout_has_no_horizontal_overflow(playground, scheme, screenshot):
    page = playground
    page.emulate_media(color_scheme=scheme)
    page.select_option("#target", "default")
    send(page, PROMPT)
    wait_idle(page, turns=1)
    assert_no_horizontal_overflow(page)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == ("rgb(247, 247, 245)" if scheme == "light" else "rgb(19, 20, 22)")
    if scheme == "dark":
        screenshot(page, "playground-dark.png", publish=True)


def test_layout_fits_a_phone_width(browser, log_in, registry, screenshot):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = context.new_page()
    try:
        log_in(page)
        # The model choice is on screen, the other settings folded; the whole top bar fits.
        expect(page.get_by_label("Model or route")).to_be_visible()
        expect(page.get_by_label("System prompt")).to_be_hidden()
        log_out = page.get_by_role("button", name="Log out").bounding_box()
        assert log_out["x"] >= 0 and log_out["x"] + log_out["width"] <= 390
        # The composer sits at the bottom of the screen, its placeholder whole.
        composer = page.locator("#composer").bounding_box()
        assert abs(composer["y"] + composer["height"] - 844) <= 1, composer
        assert page.evaluate(PLACEHOLDER_FITS, "prompt")
        assert_no_horizontal_overflow(page)

        page.select_option("#target", "default")
        send(page, "Why fall back to another provider when one fails?")
        wait_idle(page, turns=1)
        send(page, PROMPT)
        wait_idle(page, turns=2)
        composer = page.locator("#composer").bounding_box()
        assert abs(composer["y"] + composer["height"] - 844) <= 1, composer  # still at the bottom
        assert_no_horizontal_overflow(page)
        screenshot(page, "playground-phone.png", publish=True)

        page.get_by_role("button", name="New chat").click()
        page.get_by_role("button", name="Compare").click()
        send(page, PROMPT)
        wait_idle(page, turns=1)
        assert_no_horizontal_overflow(page)
        first, second = page.locator(".answer").nth(0).bounding_box(), page.locator(".answer").nth(1).bounding_box()
        assert second["y"] > first["y"] + first["height"] - 1  # columns stack
        assert first["width"] > 300
    finally:
        context.close()


# ---------------------------------------------------------------------------- what the answer shows


MARKDOWN_ANSWER = (
    "Here is **the plan**:\n\n"
    "1. try `gpt-4o`\n2. fall back\n\n"
    "| model | cost |\n|---|---|\n| gpt-4o | $2.50 |\n\n"
    "```python\ndef pick(models):\n    return models[0]\n```\n\n"
    '<img src="x" onerror="window.__pwned = 1"><script>window.__pwned = 2</script>'
    "[docs](javascript:window.__pwned=3)"
)


def test_answers_render_markdown_safely(playground):
    page = playground

    def answer(route):
        completion = {
            "id": "chatcmpl-md",
            "object": "chat.completion",
            "model": "llama-3.3-70b",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": MARKDOWN_ANSWER}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 41, "total_tokens": 50, "cost": "0.000182"},
        }
        route.fulfill(status=200, json=completion, headers={"X-Router-Model": "llama-3.3-70b"})

    page.route("**/playground/api/chat", answer)
    page.get_by_label("Stream the answer").uncheck()
    send(page, "plan?")
    wait_idle(page, turns=1)
    text = page.locator(".answer-text")
    expect(text.locator("strong")).to_have_text("the plan")
    expect(text.locator("ol li")).to_have_count(2)
    expect(text.locator("table td").first).to_have_text("gpt-4o")
    expect(text.locator("pre code.hljs")).to_contain_text("def pick(models):")
    expect(text.locator("pre code .hljs-keyword").first).to_have_text("def")  # highlighted
    assert text.locator("img, script").count() == 0
    assert text.locator("a").get_attribute("href") is None  # javascript: links are dropped
    assert page.evaluate("window.__pwned") is None
    # The cost came with the answer (usage.cost): no call to poll for.
    expect(page.locator(".answer-meta")).to_contain_text("Cost$0.000182")


def test_a_stream_that_breaks_is_shown_as_failed_in_the_chain_too(playground):
    page = playground
    page.select_option("#target", "droppy")
    send(page, PROMPT)
    wait_idle(page, turns=1)
    expect(page.locator(".answer-status")).to_have_text("failed")
    expect(page.locator(".answer-error")).to_contain_text("The answer broke off")
    expect(page.locator(".answered-by")).to_have_text("Failed on droppy")
    expect(page.locator(".attempts li")).to_have_text(re.compile(r"^droppy: stream broke off after 3 chunks"))
    expect(page.locator(".attempts li")).to_have_class(re.compile("is-error"))


def test_a_non_streamed_answer_has_a_plausible_speed(playground, recorded_calls):
    page = playground
    page.select_option("#target", "llama-3.3-70b")
    page.get_by_label("Stream the answer").uncheck()
    send(page, PROMPT)
    wait_idle(page, turns=1)
    (call,) = recorded_calls()
    expected = str(round(call.completion_tokens * 1000 / call.latency_ms, 1)).removesuffix(".0")  # as JS prints it
    expect(page.locator(".answer-meta")).to_contain_text(f"Speed{expected} tok/s")


SAVED_FIRST_ANSWER = "JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).turns[0].answers[0]"


def test_copy_regenerate_edit_and_resend(playground, fake_upstream):
    page = playground
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.select_option("#target", "qwen-2.5-32b")
    send(page, "first question")
    wait_idle(page, turns=1)
    answer = page.locator(".answer")
    answer.get_by_role("button", name="Copy", exact=True).click()
    assert page.evaluate("navigator.clipboard.readText()").startswith("Echo: first question")

    first_id = page.evaluate(SAVED_FIRST_ANSWER)["requestId"]
    answer.get_by_role("button", name="Regenerate").click()
    wait_idle(page, turns=1)
    saved = page.evaluate(SAVED_FIRST_ANSWER)
    assert saved["requestId"] != first_id and saved["text"].startswith("Echo: first question")

    page.locator(".msg-user-row").hover()
    page.get_by_role("button", name="Edit").click()
    expect(page.locator(".turn")).to_have_count(0)
    expect(page.get_by_label("Message")).to_have_value("first question")
    page.get_by_label("Message").fill("second question")
    page.get_by_role("button", name="Send").click()
    wait_idle(page, turns=1)
    expect(page.locator(".answer-text")).to_contain_text("Echo: second question")


def test_escape_stops_the_answer(playground):
    page = playground
    page.select_option("#target", "llama-3.3-70b")
    send(page, PROMPT)
    page.wait_for_selector(".answer.is-streaming")
    page.keyboard.press("Escape")
    expect(page.locator(".answer-status")).to_have_text("stopped")


def test_the_conversation_is_kept_across_a_reload(playground):
    page = playground
    page.select_option("#target", "qwen-2.5-32b")
    page.get_by_label("System prompt").fill("Be brief.")
    send(page, "remember me")
    wait_idle(page, turns=1)
    expect(page.locator(".attempts li")).to_have_count(1)
    page.reload()
    expect(page.locator(".msg-user")).to_contain_text("remember me")
    expect(page.locator(".answer-text")).to_contain_text("Echo: remember me")
    expect(page.locator(".attempts li")).to_have_text(re.compile(r"^qwen-2\.5-32b: ok"))
    expect(page.get_by_label("Model or route")).to_have_value("qwen-2.5-32b")
    expect(page.get_by_label("System prompt", exact=True)).to_have_value("Be brief.")
    page.get_by_role("button", name="New chat").click()
    page.reload()
    expect(page.locator(".turn")).to_have_count(0)


def test_view_as_code_shows_the_request_as_curl_and_python(playground, gateway):
    page = playground
    page.select_option("#target", "qwen-2.5-32b")
    page.select_option("#fallback-add", "llama-3.3-70b")
    page.get_by_label("Temperature").fill("0.3")
    send(page, "it's a test")
    wait_idle(page, turns=1)
    page.get_by_role("button", name="View as code").click()
    code = page.locator("#code-text")
    expect(code).to_contain_text(f"curl '{gateway.url}/v1/chat/completions'")
    expect(code).to_contain_text('"content": "it\'\\\'\'s a test"')  # shell-quoted
    expect(code).to_contain_text('"fallback_models": [')
    page.get_by_role("tab", name="Python (openai)").click()
    expect(code).to_contain_text(f'client = OpenAI(base_url="{gateway.url}/v1"')
    expect(code).to_contain_text('extra_body={"fallback_models": [')
    expect(code).to_contain_text("temperature=0.3,")
    expect(code).to_contain_text("stream=True,")
    page.get_by_role("button", name="Close").click()
    expect(page.locator("#code-dialog")).to_be_hidden()


def test_no_console_errors_while_answering(playground):
    page = playground
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.select_option("#target", "default")
    for turn in (1, 2):
        send(page, PROMPT)
        wait_idle(page, turns=turn)
        expect(page.locator(".turn").last.locator(".attempts li")).to_have_count(3)
    assert errors == []
