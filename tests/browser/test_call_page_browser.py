"""A call's page in headless Chromium: a call made through the gateway with body storage on, its page
reached from the call list, the conversation rendered as Markdown (headings, highlighted code), what a
client sent as HTML sanitized away, the attempts and tokens shown. With ROUTERWEB_SCREENSHOTS=1 the
README's screenshot docs/call.png is written."""

import openai
import pytest

from billing.body_models import BodyStorage, BodyStorageRule
from billing.call_bodies import call_body_for
from routing.services import api_key_create
from tests.conftest import calls_settle

pytestmark = pytest.mark.browser

PASSWORD = "pw-alice-123"  # the `user` fixture's
QUESTION = """# Sorting in Python

How do I sort a list **in place**? Something like:

```python
numbers = [3, 1, 2]
numbers.sort()
```

<img src="x" onerror="window.hacked = true"> <script>window.hacked = true</script>"""


def test_call_page_renders_the_conversation(page, gateway, registry, user, log_in_as, screenshot):
    BodyStorageRule.objects.create(storage=BodyStorage.ALL)
    _, raw_key = api_key_create(user=user, name="laptop")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=raw_key, max_retries=0, timeout=20)
    stream = client.chat.completions.create(
        model="default",
        messages=[{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": QUESTION}],
        temperature=0.2,
        stream=True,
    )
    answer = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    calls_settle()

    log_in_as(page, "/calls/", user.get_username(), PASSWORD)
    page.locator("#call-list tbody a").first.click()
    page.wait_for_url("**/calls/req_*/")
    page.wait_for_function("document.documentElement.dataset.rendered === 'markdown'")

    user_message = page.locator(".chat-user .chat-text")
    assert user_message.locator("h1").inner_text() == "Sorting in Python"
    assert user_message.locator("strong").inner_text() == "in place"
    assert user_message.locator("pre code.hljs").count() == 1  # highlighted
    assert user_message.locator("img, script").count() == 0
    assert page.evaluate("window.hacked === undefined")
    assert call_body_for(page.url.rstrip("/").rsplit("/", 1)[1]).answer == answer
    assert page.locator("#call-answer .chat-text").inner_text().startswith("Echo: # Sorting in Python")
    assert page.locator(".chat-system .chat-text").inner_text() == "You answer briefly."
    assert '"temperature": 0.2' in page.locator("#call-parameters").text_content()

    badges = page.locator("#call-badges [data-badge]").evaluate_all("nodes => nodes.map(n => n.dataset.badge)")
    assert badges == ["ok", "fallback"]  # gpt-4o is skipped (no key), claude answers 503, llama answers
    attempts = page.locator("#call-attempts tbody tr td:nth-child(2)").all_inner_texts()
    assert attempts == ["gpt-4o", "claude-sonnet-4", "llama-3.3-70b"]
    assert page.locator("#call-model").inner_text().startswith("llama-3.3-70b")
    assert int(page.locator('[data-tokens="completion"]').inner_text()) == 30
    screenshot(page, "call.png", publish=True, full_page=True)
