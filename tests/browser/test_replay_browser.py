"""A stored call, from its page back to the playground, in headless Chromium: "Open in playground"
loads its conversation and parameters, "Replay on…" runs the same request on another model and shows
the original and the replay side by side as a compare turn that can be voted on."""

import re

import pytest
from playwright.sync_api import Page, expect

from billing.body_models import BodyStorageRule
from billing.call_bodies import call_body_for
from billing.money import usd_text
from routing.models import PreferenceVote

pytestmark = pytest.mark.browser

SYSTEM = "Answer like a senior engineer."
PROMPT = "How should a gateway pick the next provider after an error?"


def wait_idle(page: Page, turns: int) -> None:
    page.wait_for_function(
        """n => document.querySelectorAll(".turn").length === n
          && !document.querySelector(".answer.is-waiting, .answer.is-streaming")
          && !document.getElementById("send").hidden""",
        arg=turns,
    )


@pytest.fixture
def stored_call(playground, registry, recorded_calls):
    """One playground call to llama-3.3-70b with a system prompt, a temperature and its body stored."""
    BodyStorageRule.objects.create(storage="all")
    page = playground
    page.select_option("#target", "llama-3.3-70b")
    page.get_by_label("System prompt").fill(SYSTEM)
    page.get_by_label("Temperature").fill("0.4")
    page.get_by_label("Message").fill(PROMPT)
    page.get_by_role("button", name="Send").click()
    wait_idle(page, turns=1)
    (call,) = recorded_calls()
    page.get_by_role("button", name="New chat").click()  # the playground starts empty again
    page.get_by_label("System prompt").fill("")
    page.get_by_label("Temperature").fill("")
    return call


def test_open_a_stored_call_in_the_playground(playground, gateway, stored_call):
    page = playground
    page.goto(f"{gateway.url}/calls/{stored_call.request_id}/")
    expect(page.locator("#call-price")).to_contain_text(f"#{stored_call.price_id}")
    expect(page.locator("#call-price")).to_contain_text("$2.00 /1M tokens")
    page.get_by_role("link", name="Open in playground").click()
    page.wait_for_url(re.compile(r"/playground/$"))  # the query is dropped once loaded
    wait_idle(page, turns=1)

    expect(page.locator(".msg-user")).to_have_text(re.compile(re.escape(PROMPT)))
    answer = page.locator(".answer")
    expect(answer).to_have_count(1)
    expect(answer.locator(".answer-text")).to_have_text(re.compile(r"^Echo: How should a gateway"))
    expect(answer.locator(".answered-by")).to_have_text("Answered by llama-3.3-70b")
    expect(answer.locator(".answer-meta")).to_contain_text(f"Cost{usd_text(stored_call.cost_usd)}")
    expect(page.get_by_label("System prompt")).to_have_value(SYSTEM)
    expect(page.get_by_label("Temperature")).to_have_value("0.4")
    expect(page.locator("#target")).to_have_value("llama-3.3-70b")
    expect(page.locator(".pg-notice")).to_contain_text(f"Opened call {stored_call.request_id}")


def test_replay_on_another_model_side_by_side_and_vote(
    playground, gateway, registry, stored_call, recorded_calls, screenshot
):
    page = playground
    page.goto(f"{gateway.url}/calls/{stored_call.request_id}/")
    page.get_by_label("Replay on").select_option("qwen-2.5-32b")
    page.get_by_role("button", name="Replay").click()
    page.wait_for_url(re.compile(r"/playground/$"))
    page.wait_for_function("document.querySelectorAll('.answer').length === 2")
    wait_idle(page, turns=1)

    answers = page.locator(".answer")
    first, second = answers.nth(0).bounding_box(), answers.nth(1).bounding_box()
    assert first["y"] == second["y"] and first["x"] + first["width"] <= second["x"]  # side by side
    original, replay = recorded_calls()
    assert original.request_id == stored_call.request_id
    assert (replay.requested, replay.model.name, replay.source) == ("qwen-2.5-32b", "qwen-2.5-32b", "playground")
    assert replay.prompt_tokens == original.prompt_tokens  # the same messages
    original_body, replay_body = call_body_for(original.request_id), call_body_for(replay.request_id)
    assert replay_body.messages == original_body.messages
    assert replay_body.parameters["temperature"] == 0.4
    for index, call in enumerate((original, replay)):
        meta = answers.nth(index).locator(".answer-meta")
        expect(answers.nth(index).locator(".answer-target")).to_have_text(call.requested)
        expect(meta).to_contain_text(f"Cost{usd_text(call.cost_usd)}")
        expect(meta).to_contain_text(f"{call.prompt_tokens} in · {call.completion_tokens} out")
        expect(meta).to_contain_text("Latency")
    expect(answers.nth(1).locator(".answer-text")).to_have_text(re.compile(r"^Echo: How should a gateway"))

    answers.nth(1).get_by_role("button", name="Better").click()
    expect(page.locator(".vote-note")).to_contain_text("Vote saved: B (qwen-2.5-32b)")
    vote = PreferenceVote.objects.get()
    assert (vote.compared, vote.request_ids, vote.chosen) == (
        ["llama-3.3-70b", "qwen-2.5-32b"],
        [original.request_id, replay.request_id],
        "qwen-2.5-32b",
    )
    screenshot(page, "replay.png", publish=True)
