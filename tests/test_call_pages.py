"""The call log's pages: one call's page for every kind of call, the call list's filters, search and
pages, and the dashboard's access rule (own calls; the spend permission sees all; unknown and
forbidden request ids are the same 404). Rows are stored through the recorder's write path
(`call_rows_store`, which keeps the rollups the list's pages are bounded by)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.call_bodies import call_bodies_matching
from billing.calls import call_rows_store
from billing.models import Call, CallBody
from tests.billing_fixtures import attempt, call_row, client_for


def detail(client: Client, request_id: str):
    return client.get(reverse("calls:detail", args=[request_id]))


@pytest.fixture
def kinds(world):
    """One call of each kind, by alice with her prod key, a minute apart."""
    alice, key, gpt, mini = world["alice"], world["alice_prod"], world["models"]["gpt-4o"], world["models"]["mini"]
    now = timezone.now() - timedelta(minutes=30)
    common = dict(user_id=alice.id, api_key_id=key.id)
    rows = {
        "ok": call_row(
            at=now,
            request_id="req_ok",
            requested="gpt-4o",
            model=gpt,
            attempts=[attempt("gpt-4o", "ok", 812)],
            prompt=1200,
            cached=200,
            cache_write=300,
            completion=340,
            cost=Decimal("0.0061"),
            latency_ms=830,
            ttft_ms=120,
            **common,
        ),
        "error": call_row(
            at=now + timedelta(minutes=1),
            request_id="req_error",
            requested="gpt-4o",
            status="error",
            attempts=[attempt("gpt-4o", "error", 40)],
            **common,
        ),
        "fallback": call_row(
            at=now + timedelta(minutes=2),
            request_id="req_fallback",
            requested="smart",
            model=mini,
            attempts=[attempt("gpt-4o", "error", 30), attempt("mini", "ok", 200)],
            prompt=10,
            completion=5,
            cost=Decimal("0.000004"),
            **common,
        ),
        "disconnected": call_row(
            at=now + timedelta(minutes=3),
            request_id="req_disconnected",
            requested="gpt-4o",
            model=gpt,
            status="error",
            attempts=[attempt("gpt-4o", "ok", 500)],
            prompt=50,
            completion=7,
            estimated=True,
            stream=True,
            **common,
        ),
        "estimated": call_row(
            at=now + timedelta(minutes=4),
            request_id="req_estimated",
            requested="gpt-4o",
            model=gpt,
            attempts=[attempt("gpt-4o", "ok", 60)],
            prompt=31,
            completion=9,
            estimated=True,
            **common,
        ),
        "rejected": call_row(
            at=now + timedelta(minutes=5), request_id="req_rejected", requested="gpt-4o", status="rejected", **common
        ),
        "cache_hit": call_row(
            at=now + timedelta(minutes=6),
            request_id="req_cache_hit",
            requested="gpt-4o",
            model=gpt,
            status="cache_hit",
            saved=Decimal("0.0061"),
            **common,
        ),
    }
    rows["disconnected"]["client_disconnected"] = True
    rows["disconnected"]["estimate_reason"] = "client_disconnected"
    rows["estimated"]["estimate_reason"] = "no_usage"
    call_rows_store(list(rows.values()))
    return rows


EXPECTED_BADGES = {
    "ok": ["ok"],
    "error": ["error"],
    "fallback": ["ok", "fallback"],
    "disconnected": ["error", "disconnected", "estimated"],
    "estimated": ["ok", "estimated"],
    "rejected": ["rejected"],
    "cache_hit": ["cache_hit"],
}


@pytest.mark.parametrize("kind", list(EXPECTED_BADGES))
def test_call_page_for_every_kind(world, kinds, kind):
    row = kinds[kind]
    page = detail(client_for(world["alice"]), row["request_id"])
    assert page.status_code == 200
    assert page.context["badges"] == [(name, name.replace("_", " ")) for name in EXPECTED_BADGES[kind]]
    html = page.content.decode()
    for name in EXPECTED_BADGES[kind]:
        assert f'data-badge="{name}"' in html
    assert f'data-tokens="prompt">{row["prompt_tokens"]}<' in html
    assert f'data-tokens="cached">{row["cached_tokens"]}<' in html
    assert f'data-tokens="cache_write">{row["cache_write_tokens"]}<' in html
    assert f'data-tokens="completion">{row["completion_tokens"]}<' in html
    assert f'id="call-latency">{row["latency_ms"]} ms<' in html
    for entry in row["attempts"]:
        assert f'<td class="mono">{entry["model"]}</td>' in html
    assert 'id="no-body"' in html  # nothing stored for these calls


def test_call_page_values_of_an_ok_call(world, kinds):
    html = detail(client_for(world["alice"]), "req_ok").content.decode()
    assert 'id="call-cost">$0.0061<' in html
    assert 'data-tokens="uncached">700<' in html  # 1200 less 200 read from and 300 written to the cache
    assert 'id="call-ttft">120 ms<' in html
    assert 'id="call-overhead">0.50 ms<' in html
    assert "812 ms" in html  # the attempt's own time
    assert "PRICE PROVENANCE" not in html and 'id="call-actions"' in html  # the place kept for the other half


def test_cache_hit_page_shows_what_it_saved(world, kinds):
    html = detail(client_for(world["alice"]), "req_cache_hit").content.decode()
    assert 'id="call-saved">$0.0061<' in html
    assert "answered from the response cache" in html


def test_stored_conversation_is_shown_escaped_for_markdown(world, kinds):
    CallBody.objects.create(
        request_id="req_ok",
        created_at=timezone.now(),
        request={"messages": [{"role": "user", "content": "Show <b>code</b>"}], "parameters": {"temperature": 0.3}},
        answer="```python\nprint('hi')\n```",
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    )
    html = detail(client_for(world["alice"]), "req_ok").content.decode()
    assert "Show &lt;b&gt;code&lt;/b&gt;" in html
    assert "print(&#x27;hi&#x27;)" in html
    assert "&quot;temperature&quot;: 0.3" in html
    assert "&quot;name&quot;: &quot;f&quot;" in html
    assert 'id="no-body"' not in html


def test_access_own_calls_others_404_and_spend_permission_sees_all(world, kinds):
    assert detail(client_for(world["alice"]), "req_ok").status_code == 200
    bob = client_for(world["bob"])
    forbidden, unknown = detail(bob, "req_ok"), detail(bob, "req_no_such_call")
    assert forbidden.status_code == unknown.status_code == 404
    assert forbidden.content == unknown.content
    assert detail(client_for(world["root"]), "req_ok").status_code == 200
    assert detail(bob, "x" * 500).status_code == 404
    anonymous = detail(Client(), "req_ok")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    assert [c.request_id for c in listed(bob)] == []
    assert len(listed(client_for(world["root"]))) == 7


def listed(client: Client, **params) -> list[Call]:
    response = client.get(reverse("calls:list"), {"range": "7d", **params})
    assert response.status_code == 200, response.content
    return response.context["page"].calls


@pytest.mark.parametrize(
    "params, expected",
    [
        ({}, set(EXPECTED_BADGES)),
        ({"status": "error"}, {"error", "disconnected"}),
        ({"status": "rejected"}, {"rejected"}),
        ({"status": "cache_hit"}, {"cache_hit"}),
        ({"status": "fallback"}, {"fallback"}),
        ({"estimated": "yes"}, {"disconnected", "estimated"}),
        ({"estimated": "no", "status": "ok"}, {"ok", "fallback"}),
        ({"estimated": "no", "status": "fallback"}, {"fallback"}),
        ({"estimated": "yes", "status": "fallback"}, set()),
        ({"route": "smart"}, {"fallback"}),
        ({"model": "mini"}, {"fallback"}),
        ({"q": "req_rejected"}, {"rejected"}),
        ({"q": "req_nothing"}, set()),
    ],
)
def test_list_filters(world, kinds, params, expected):
    calls = listed(client_for(world["alice"]), **params)
    assert {c.request_id.removeprefix("req_") for c in calls} == expected
    assert [c.created_at for c in calls] == sorted((c.created_at for c in calls), reverse=True)


def test_list_links_to_each_call_and_the_dashboard_links_too(world, kinds):
    alice = client_for(world["alice"])
    html = alice.get(reverse("calls:list")).content.decode()
    assert f'href="{reverse("calls:detail", args=["req_ok"])}"' in html
    dashboard = alice.get(reverse("billing:dashboard")).content.decode()
    assert f'href="{reverse("calls:detail", args=["req_ok"])}"' in dashboard


def test_list_bad_filters_are_field_errors(world, kinds):
    alice = client_for(world["alice"])
    for params in ({"status": "nope"}, {"estimated": "maybe"}, {"q": "x" * 201}, {"before": "garbage"}):
        response = alice.get(reverse("calls:list"), params)
        assert response.status_code == 400
        assert 'class="error' in response.content.decode()
    assert alice.get(reverse("calls:list"), {"q": "a\x00b"}).status_code == 400


def test_text_search_in_stored_bodies(world, kinds):
    CallBody.objects.create(
        request_id="req_ok",
        created_at=timezone.now(),
        request={"messages": [{"role": "user", "content": "How do penguins sleep?"}], "parameters": {}},
        answer="Standing up, mostly.",
    )
    CallBody.objects.create(
        request_id="req_error", created_at=timezone.now(), request={"messages": [{"role": "user", "content": "Cats?"}]}
    )
    alice = client_for(world["alice"])
    assert [c.request_id for c in listed(alice, q="penguins")] == ["req_ok"]
    assert [c.request_id for c in listed(alice, q="standing")] == ["req_ok"]  # the answer too
    assert [c.request_id for c in listed(alice, q="cats")] == ["req_error"]
    assert listed(alice, q="giraffes") == []
    assert listed(client_for(world["bob"]), q="penguins") == []  # someone else's body: not found
    matched = set(call_bodies_matching("penguins sleep").values_list("request_id", flat=True))
    assert matched == {"req_ok"}


def test_search_plan_per_database(world, kinds):
    """PostgreSQL searches the GIN index of migration 0010; SQLite a plain case-insensitive LIKE."""
    CallBody.objects.create(
        request_id="req_ok", created_at=timezone.now(), request={}, answer="penguins sleep standing"
    )
    sql, params = call_bodies_matching("penguins").query.sql_with_params()
    if connection.vendor != "postgresql":
        assert "LIKE" in sql.upper()
        return
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = on")
    assert "call_body_text_idx" in plan


def test_keyset_pages(world):
    alice, key, gpt = world["alice"], world["alice_prod"], world["models"]["gpt-4o"]
    start = timezone.now() - timedelta(hours=5)
    rows = [
        call_row(
            at=start + timedelta(seconds=7 * n),
            request_id=f"req_{n:04d}",
            requested="gpt-4o",
            model=gpt,
            user_id=alice.id,
            api_key_id=key.id,
            status="error" if n % 3 == 0 else "ok",
        )
        for n in range(130)
    ]
    call_rows_store(rows)
    client = client_for(alice)
    for params, expected in (({}, 130), ({"status": "error"}, 44)):
        seen, cursor = [], None
        while True:
            response = client.get(
                reverse("calls:list"), {"range": "7d", **params, **({"before": cursor} if cursor else {})}
            )
            seen += [c.request_id for c in response.context["page"].calls]
            next_cursor = response.context["page"].next_cursor
            if next_cursor is None:
                break
            cursor = next_cursor.encode()
        assert len(seen) == len(set(seen)) == expected
        assert seen == sorted(seen, reverse=True)


def test_admin_call_list_links_to_the_call_page(world, kinds):
    superuser = client_for(world["root"].__class__.objects.create_superuser("boss", password="pw-boss-12345"))
    html = superuser.get(reverse("admin:billing_call_changelist")).content.decode()
    assert f'href="{reverse("calls:detail", args=["req_ok"])}"' in html
