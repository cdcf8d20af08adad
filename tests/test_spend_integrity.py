"""Spend truth under hostile input and odd upstreams: every call keeps exactly one stored row.

A value from a client or an upstream that no column can hold is cleaned where it enters; a row the
database still refuses is quarantined while the rows around it are stored; the recorder holds one
spool file and no rows in memory however long the database refuses them.
"""

import json
import os
import subprocess
import sys
from decimal import Decimal

import openai
import orjson
import pytest
from django.db import connection
from django.utils import timezone

from billing.budget_upkeep import budget_upkeep
from billing.budgets import period_start_for
from billing.calls import quarantined_rows_retry, rows_quarantine, spooled_lines_store
from billing.models import Budget, Call, QuarantinedRow
from billing.recorder import CallRecorder
from testkit.live import serve_asgi
from tests.billing_fixtures import budget_for
from tests.conftest import REPO_ROOT
from tests.factories import model_create, provider_create

HELLO = [{"role": "user", "content": "hello"}]


SSE_HEADER, JSON_HEADER = (b"content-type", b"text/event-stream"), (b"content-type", b"application/json")


class ScriptedUpstream:
    """An OpenAI-compatible upstream that answers whatever the test sets: `status` and `body` (a JSON
    answer), or `events` (streamed as SSE, each a JSON value or raw bytes)."""

    def __init__(self) -> None:
        self.status, self.body, self.events = 200, {}, None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if self.events is not None:
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
            )
            for event in self.events:
                data = event if isinstance(event, bytes) else json.dumps(event).encode()
                await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            return
        body = json.dumps(self.body).encode()
        await send(
            {"type": "http.response.start", "status": self.status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def scripted():
    app = ScriptedUpstream()
    server = serve_asgi(app)
    server.app = app
    yield app, server
    server.stop()


@pytest.fixture
def odd(scripted, transactional_db):
    """A priced model `odd` on the scripted upstream; returns the upstream to script."""
    app, server = scripted
    app.status, app.body, app.events = 200, {}, None
    provider = provider_create(name="scripted", base_url=f"{server.url}/v1", read_timeout_s=5)
    model_create(name="odd", provider=provider, price=(1, 2))
    return app


ANSWER = "four words of answer"


def completion(usage) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "odd",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "four words of answer"}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }


@pytest.mark.parametrize(
    ("usage", "reason"),
    [
        ({"prompt_tokens": -5, "completion_tokens": 3}, "invalid_usage:prompt_tokens"),
        ({"prompt_tokens": 3_000_000_000, "completion_tokens": 3}, "invalid_usage:prompt_tokens"),
        ({"prompt_tokens": 10.0, "completion_tokens": 3}, "invalid_usage:prompt_tokens"),
        ({"prompt_tokens": 10, "completion_tokens": "ten"}, "invalid_usage:completion_tokens"),
        ({"prompt_tokens": 10, "completion_tokens": True}, "invalid_usage:completion_tokens"),
        (
            {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": "n/a"}},
            "invalid_usage:cached_tokens",
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": "none"},
            "invalid_usage:prompt_tokens_details",
        ),
        ("lots", "invalid_usage"),
        (None, "no_usage"),
    ],
)
def test_odd_usage_is_recorded_as_an_estimate_with_the_reason(odd, client, recorded_calls, usage, reason):
    odd.body = completion(usage)
    answer = client.chat.completions.create(model="odd", messages=HELLO)
    assert answer.choices[0].message.content == ANSWER
    odd.body = completion({"prompt_tokens": 7, "completion_tokens": 5})
    client.chat.completions.create(model="odd", messages=HELLO)

    estimated, exact = recorded_calls()
    assert (estimated.status, estimated.usage_estimated, estimated.estimate_reason) == ("ok", True, reason)
    assert estimated.prompt_tokens > 0 and estimated.cost_usd > 0  # priced from the estimate, not lost
    assert (exact.usage_estimated, exact.estimate_reason, exact.prompt_tokens, exact.completion_tokens) == (
        False,
        "",
        7,
        5,
    )
    assert exact.cost_usd == Decimal(7 * 1 + 5 * 2) / 1_000_000


@pytest.mark.parametrize(
    ("code", "stored"),
    [
        ("x" * 100, "x" * 40),
        ("bad\u0000code", "badcode"),
        ({"nested": "object"}, ""),
        (["a"], ""),
        (12345, "12345"),
    ],
)
def test_odd_error_fields_from_an_upstream_are_cleaned_for_the_client_and_the_row(
    odd, client, recorded_calls, code, stored
):
    odd.status = 400
    odd.body = {"error": {"message": "bad\u0000 request", "type": {"t": 1}, "param": "x" * 500, "code": code}}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="odd", messages=HELLO)
    error = raised.value.body
    assert error["message"] == "bad request" and error["type"] == "invalid_request_error"
    assert error["code"] == (stored or None) and len(error["param"]) == 40
    (call,) = recorded_calls()
    assert (call.status, call.http_status, call.error_code) == ("error", 400, stored)


def test_odd_stream_events_neither_break_the_stream_nor_its_row(odd, http, recorded_calls):
    content = lambda text: {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}  # noqa: E731
    odd.events = [
        {"choices": "not a list"},
        {"choices": [{"index": 0, "delta": ["not", "an", "object"]}]},
        {"choices": [None, {"index": 0, "delta": {"content": 42}}]},
        [1, 2, 3],
        content("Hello"),
        content(" world"),
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": "two"}},
    ]
    with http.stream("POST", "/v1/chat/completions", json={"model": "odd", "messages": HELLO, "stream": True}) as r:
        assert r.status_code == 200
        body = r.read()
    assert b'"Hello"' in body and b'" world"' in body and body.endswith(b"data: [DONE]\n\n")
    (call,) = recorded_calls()
    assert (call.status, call.usage_estimated, call.estimate_reason) == ("ok", True, "invalid_usage:completion_tokens")
    assert call.completion_tokens == 3  # "Hello world": 11 characters


def test_a_nul_model_name_then_400_good_calls_are_all_stored_with_the_budget_settled(
    fake_model, client, user, recorded_calls
):
    fake_model("echo-1", "echo+words=3", price=(1, 2))
    budget = budget_for(limit="5", user=user)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="\u0000", messages=HELLO)
    with pytest.raises(openai.BadRequestError):  # longer than any registry name
        client.chat.completions.create(model="m" * 300, messages=HELLO)
    for _ in range(400):
        client.chat.completions.create(model="echo-1", messages=HELLO)

    calls = recorded_calls()
    assert len(calls) == 402
    assert [c.requested for c in calls[:2]] == ["", ""]
    assert [(c.status, c.http_status) for c in calls[:2]] == [("rejected", 400), ("rejected", 400)]
    assert all(c.status == "ok" and not c.usage_estimated for c in calls[2:])
    assert not QuarantinedRow.objects.exists()
    budget_upkeep.return_all()
    budget.refresh_from_db()
    assert budget.spent_usd == sum(c.cost_usd for c in calls) and budget.reserved_usd == 0


# ---------------------------------------------------------------------------- the row writer's quarantine


def spooled(request_id: str, **fields) -> bytes:
    row = {
        "created_at": timezone.now(),
        "request_id": request_id,
        "requested": "m",
        "status": "ok",
        "http_status": 200,
        "cost_usd": "0.000001",
        "attempts": [],
        **fields,
    }
    return orjson.dumps(row, default=str)


def test_a_row_the_database_refuses_is_quarantined_and_the_others_are_stored_and_settled(transactional_db, user):
    budget = budget_for(limit="1", user=user)
    Budget.objects.filter(pk=budget.pk).update(reserved_usd=Decimal("0.0004"))
    reservation = [[budget.id, "0.000001", period_start_for(timezone.now()).isoformat()]]
    lines = [spooled(f"req_good_{i}", user_id=user.id, reservations=reservation) for i in range(400)]
    lines.insert(123, spooled("req_poison", created_at="not a time"))
    lines.insert(300, b'{"torn": ')

    assert spooled_lines_store(lines, may_be_stored=False) == 2
    assert Call.objects.count() == 400
    quarantined = {q.request_id: q for q in QuarantinedRow.objects.all()}
    assert set(quarantined) == {"req_poison", ""}
    assert "not a time" in quarantined["req_poison"].line and quarantined["req_poison"].error
    budget.refresh_from_db()
    assert (budget.spent_usd, budget.reserved_usd) == (Decimal("0.0004"), 0)

    assert spooled_lines_store([spooled("req_poison", created_at="not a time")]) == 1  # again: one entry
    assert QuarantinedRow.objects.get(request_id="req_poison").tries == 2


def test_a_quarantined_row_is_stored_by_a_retry_once_it_can_be(transactional_db):
    good, bad = spooled("req_fixed"), spooled("req_still_bad", created_at="never")
    rows_quarantine([(good, orjson.loads(good)), (bad, orjson.loads(bad))], "a cause since fixed")
    assert quarantined_rows_retry(QuarantinedRow.objects.order_by("request_id")) == 1
    assert list(Call.objects.values_list("request_id", flat=True)) == ["req_fixed"]
    entry = QuarantinedRow.objects.get()
    assert (entry.request_id, entry.tries) == ("req_still_bad", 2) and "never" in entry.error


def test_values_postgresql_refuses_never_block_a_batch(transactional_db):
    """NUL in text and integers past int4: PostgreSQL refuses them (quarantined), SQLite takes them."""
    lines = [spooled("req_nul", requested="a\u0000b"), spooled("req_big", prompt_tokens=3_000_000_000)]
    lines += [spooled(f"req_ok_{i}") for i in range(10)]
    quarantined = spooled_lines_store(lines)
    refused = set(QuarantinedRow.objects.values_list("request_id", flat=True))
    assert refused == ({"req_nul", "req_big"} if connection.vendor == "postgresql" else set())
    assert quarantined == len(refused) and Call.objects.count() == 12 - quarantined


# ---------------------------------------------------------------------------- the recorder through an outage


OUTAGE = """
import os, resource, sys, threading
from pathlib import Path
import django
django.setup()
from django.db import OperationalError
from billing.recorder import CallRecorder
from billing.row_writer import RowWriter
from django.utils import timezone

resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))  # "Too many open files" long before 2,000 flushes
now = [0.0]
outage = [True]
writer = RowWriter()

def insert(lines, **kwargs):
    if outage[0]:
        raise OperationalError("the database is down")
    writer.store(lines, **kwargs)

recorder = CallRecorder(Path(sys.argv[1]), flush_interval_s=3600, insert=insert, clock=lambda: now[0], backoff_max_s=1)
# The thread's start-up scan for orphaned spools opens the directory and the files in it for a
# moment: let it finish before counting, or a count taken during the scan is two higher.
scanned = threading.Event()
scan = recorder.replay_orphans
def replay_orphans():
    try:
        return scan()
    finally:
        scanned.set()
recorder.replay_orphans = replay_orphans
recorder.start()
assert scanned.wait(30)
fds = []
for i in range(2000):
    recorder.record({"created_at": timezone.now(), "request_id": f"req_outage_{i}", "requested": "m",
                     "status": "ok", "http_status": 200, "cost_usd": None, "attempts": []})
    now[0] += 1
    recorder.store_pending()
    fds.append(len(os.listdir("/proc/self/fd")))
assert recorder.backlog_rows == 2000
outage[0] = False
now[0] += 10
assert recorder.store_pending()
recorder.stop()
writer.close()
print(min(fds), max(fds), len(list(Path(sys.argv[1]).glob("*.jsonl"))))
"""


def test_a_long_outage_keeps_open_files_flat_and_stores_every_row_after(transactional_db, tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "routerweb.settings", "SECRET_KEY": "x"}
    from tests.conftest import database_url_for_tests

    env["DATABASE_URL"] = database_url_for_tests()
    result = subprocess.run(
        [sys.executable, "-c", OUTAGE, str(tmp_path)], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fewest, most, spools_left = map(int, result.stdout.split())
    assert most - fewest <= 1 and spools_left == 0
    assert Call.objects.filter(request_id__startswith="req_outage_").count() == 2000


def test_replay_goes_on_past_a_spool_it_cannot_store_and_retries_it_later(tmp_path):
    for name, request_id in [("calls-1-a.jsonl", "req_refused"), ("calls-2-b.jsonl", "req_fine")]:
        (tmp_path / name).write_bytes(spooled(request_id) + b"\n")
    stored, refusing = [], [True]

    def insert(lines, **_):
        if refusing[0] and b"req_refused" in lines[0]:
            raise RuntimeError("cannot store this one now")
        stored.extend(orjson.loads(line)["request_id"] for line in lines)

    recorder = CallRecorder(tmp_path, insert=insert)
    assert recorder.replay_orphans() == 1 and stored == ["req_fine"]
    assert [p.name for p in tmp_path.glob("*.jsonl")] == ["calls-1-a.jsonl"]
    refusing[0] = False
    assert recorder.replay_orphans() == 1 and stored == ["req_fine", "req_refused"]
    assert not list(tmp_path.glob("*.jsonl"))


def test_the_recorder_thread_survives_any_error_and_stores_the_rows_once_it_can(tmp_path):
    failures, stored = [TypeError("odd"), MemoryError(), OSError("disk")], []

    def insert(lines, **_):
        if failures:
            raise failures.pop(0)
        stored.extend(orjson.loads(line)["request_id"] for line in lines)

    def upkeep():
        raise RuntimeError("upkeep failed")

    recorder = CallRecorder(tmp_path, flush_interval_s=0.01, insert=insert, upkeep=upkeep, backoff_max_s=0.01)
    for i in range(3):
        recorder.record({"request_id": f"req_{i}"})
    recorder.flush(timeout_s=5)
    assert recorder.alive and sorted(stored) == ["req_0", "req_1", "req_2"]
    recorder.stop()
