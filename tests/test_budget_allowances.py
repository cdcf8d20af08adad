"""Budget allowances: shares of a budget a worker reserves in one write and spends call by call.

The ledger alone (plain bookkeeping, a fake clock), then against the database: grant sizes, the
exactness near a limit, handing back, dead workers' allowances, renewal, and two worker processes
spending one budget.
"""

import asyncio
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

import billing.budget_upkeep
import billing.budgets
from billing.allowances import AllowanceLedger, Grant
from billing.budget_upkeep import BudgetUpkeep, budget_upkeep
from billing.budgets import (
    ALLOWANCE_CALLS,
    ALLOWANCE_RENEW_S,
    ALLOWANCE_TTL_S,
    BudgetExceeded,
    budget_allowances,
    budgets_call_ended,
    budgets_reserve,
    budgets_settle,
    period_start_for,
)
from billing.models import Budget, BudgetAllowance, Call
from billing.recorder import call_recorder
from tests.billing_fixtures import budget_for, worst_case_usd

PERIOD = period_start_for(timezone.now())
VERSION = "v1"


@pytest.fixture(autouse=True)
def no_upkeep_in_the_background():
    """The recorder's thread (left running by earlier gateway tests) runs the budgets' upkeep on this
    process's ledger after every flush, refills among it. These tests drive that ledger and its upkeep
    step by step, so the thread is stopped first (a test that records a call starts it again)."""
    call_recorder().stop()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def ledger(clock):
    return AllowanceLedger(usable_s=20, idle_s=2, clock=clock)


def grant(ledger, budget_id, amount, *, allowance_id="a1", topped_up=False, version=VERSION, draw="0.1"):
    return ledger.add_grants_and_draw(
        [Grant(budget_id, allowance_id, Decimal(amount), PERIOD, topped_up)],
        confirmed_at=ledger.clock(),
        budget_ids=[budget_id],
        amount=Decimal(draw),
        period_start=PERIOD,
        registry_version=version,
    )


def allowance_to_top_up(ledger, budget_id, *, version=VERSION):
    async def ask():
        future, topping_up = ledger.grant_started([budget_id], PERIOD, version)
        ledger.grant_ended(future, topping_up)
        return topping_up[budget_id]

    return asyncio.run(ask())


# ---------------------------------------------------------------------------- the ledger alone


def test_a_call_draws_from_its_allowance_or_says_what_each_budget_lacks(ledger):
    assert ledger.draw([1], Decimal("0.1"), PERIOD, VERSION) == {1: Decimal("0.1")}
    (first,) = grant(ledger, 1, "0.25")
    assert (first.budget_id, first.amount, first.allowance_id) == (1, Decimal("0.1"), "a1")
    assert len(ledger.draw([1], Decimal("0.1"), PERIOD, VERSION)) == 1
    # 0.05 left: a worker's own unused share counts, so it asks only for what is missing.
    assert ledger.draw([1], Decimal("0.1"), PERIOD, VERSION) == {1: Decimal("0.05")}


def test_a_call_draws_on_all_its_budgets_or_on_none(ledger):
    grant(ledger, 1, "1", allowance_id="user")  # 0.9 left after the call that asked
    assert ledger.draw([1, 2], Decimal("0.1"), PERIOD, VERSION) == {2: Decimal("0.1")}
    assert isinstance(ledger.draw([1], Decimal("0.9"), PERIOD, VERSION), list)  # the refused call took nothing
    assert ledger.draw([1], Decimal("0.1"), PERIOD, VERSION) == {1: Decimal("0.1")}


def test_what_a_call_did_not_spend_is_free_again_and_an_unknown_cost_counts_as_zero(ledger):
    (reservation,) = grant(ledger, 1, "0.1")
    assert ledger.draw([1], Decimal("0.1"), PERIOD, VERSION) == {1: Decimal("0.1")}
    ledger.settle([reservation], Decimal("0.03"))
    assert ledger.draw([1], Decimal("0.07"), PERIOD, VERSION)[0].amount == Decimal("0.07")
    (again,) = grant(ledger, 1, "0.1", topped_up=True)
    ledger.settle([again], None)
    assert len(ledger.draw([1], Decimal("0.1"), PERIOD, VERSION)) == 1


def test_an_allowance_is_usable_only_for_a_while_after_the_database_confirmed_it(ledger, clock):
    grant(ledger, 1, "1")
    clock.now += 19.9
    assert isinstance(ledger.draw([1], Decimal("0.1"), PERIOD, VERSION), list)
    clock.now += 0.1
    assert ledger.draw([1], Decimal("0.1"), PERIOD, VERSION) == {1: Decimal("0.1")}
    ledger.confirm({"a1"}, ["a1"], confirmed_at=clock.now)  # renewed
    assert isinstance(ledger.draw([1], Decimal("0.1"), PERIOD, VERSION), list)


def test_an_allowance_the_database_no_longer_has_is_retired(ledger, clock):
    (reservation,) = grant(ledger, 1, "1")
    ledger.confirm(set(), ["a1"], confirmed_at=clock.now)
    assert ledger.draw([1], Decimal("0.1"), PERIOD, VERSION) == {1: Decimal("0.1")}
    assert ledger.take_returnable() == []  # its call is still running
    ledger.settle([reservation], Decimal("0.01"))
    assert ledger.take_returnable() == ["a1"]


def test_a_new_registry_version_starts_a_new_allowance(ledger):
    grant(ledger, 1, "1")
    assert allowance_to_top_up(ledger, 1) == "a1"
    assert allowance_to_top_up(ledger, 1, version="v2") is None
    assert ledger.draw([1], Decimal("0.1"), PERIOD, "v2") == {1: Decimal("0.1")}
    (reservation,) = grant(ledger, 1, "1", allowance_id="a2", version="v2")
    assert reservation.allowance_id == "a2"
    assert ledger.take_returnable() == []  # a1 still has a call in flight
    assert sorted(ledger.held_ids()) == ["a1", "a2"]


def test_idle_allowances_go_back_and_busy_ones_never(ledger, clock):
    (reservation,) = grant(ledger, 1, "1")
    clock.now += 5
    assert ledger.take_returnable() == []
    ledger.settle([reservation], Decimal("0.01"))
    assert ledger.take_returnable() == ["a1"]
    assert ledger.held_ids() == [] and allowance_to_top_up(ledger, 1) is None


def test_an_allowance_being_topped_up_is_not_handed_back_meanwhile(ledger, clock):
    (reservation,) = grant(ledger, 1, "1")
    ledger.settle([reservation], Decimal("0.01"))
    clock.now += 5

    async def top_up_while_idle():
        future, topping_up = ledger.grant_started([1], PERIOD, VERSION)
        assert topping_up == {1: "a1"} and ledger.grant_in_flight([1]) is future
        assert ledger.take_returnable() == []  # the grant adds to it: handing it back now would lose that
        ledger.grant_ended(future, topping_up)
        assert future.done() and ledger.grant_in_flight([1]) is None

    asyncio.run(top_up_while_idle())
    assert ledger.take_returnable() == ["a1"]


def test_an_allowance_running_low_is_refilled_ahead_of_need_once_at_a_time(ledger, clock):
    grant(ledger, 1, "1", draw="0.5")  # exactly half of the grant left: not low yet
    assert ledger.refills_due(below_share=Decimal("0.5"), growth_s=1) == []
    ledger.draw([1], Decimal("0.1"), PERIOD, VERSION)
    clock.now += 0.5  # the grant went under half within growth_s: the refill asks for twice as much
    (refill,) = ledger.refills_due(below_share=Decimal("0.5"), growth_s=1)
    assert (refill.budget_id, refill.allowance_id, refill.want) == (1, "a1", Decimal("2"))
    assert ledger.refills_due(below_share=Decimal("0.5"), growth_s=1) == []  # already asked for
    clock.now += 5
    assert ledger.take_returnable() == []  # idle, but a refill adds to it: not handed back meanwhile
    ledger.refill_ended([refill], [Grant(1, "a1", Decimal("2"), PERIOD, topped_up=True)], confirmed_at=clock.now)
    assert ledger.draw([1], Decimal("2.5"), PERIOD, VERSION) == {1: Decimal("0.1")}  # 0.4 + 2 free
    assert len(ledger.draw([1], Decimal("2.4"), PERIOD, VERSION)) == 1


def test_near_the_limit_allowances_are_not_refilled_ahead(ledger):
    ledger.add_grants_and_draw(
        [Grant(1, "a1", Decimal("0.1"), PERIOD, topped_up=False, capped=True)],
        confirmed_at=ledger.clock(),
        budget_ids=[1],
        amount=Decimal("0.1"),
        period_start=PERIOD,
        registry_version=VERSION,
    )
    assert ledger.refills_due(below_share=Decimal("0.5"), growth_s=1) == []


# ---------------------------------------------------------------------------- against the database


def reserve(budget: Budget, amount: str):
    return asyncio.run(
        budgets_reserve(budget_ids=[budget.id], amount=Decimal(amount), at=timezone.now(), registry_version=VERSION)
    )


def settle(reservations, cost: str | None) -> None:
    """What the gateway (the call ended) and then the recorder (its row) do for one call."""
    cost = None if cost is None else Decimal(cost)
    budgets_call_ended(reservations, cost)
    with transaction.atomic():
        budgets_settle((reservation, cost) for reservation in reservations)


def amounts(budget: Budget) -> tuple[Decimal, Decimal, list[Decimal]]:
    budget.refresh_from_db()
    return budget.spent_usd, budget.reserved_usd, [a.amount_usd for a in budget.allowances.all()]


@pytest.fixture
def grants_asked(monkeypatch):
    asked = []
    grant_in_transaction = billing.budgets.grant_in_transaction

    def counting(requests, period):
        asked.append([(r.need, r.want) for r in requests])
        return grant_in_transaction(requests, period)

    monkeypatch.setattr(billing.budgets, "grant_in_transaction", counting)  # calls' grants
    monkeypatch.setattr(billing.budget_upkeep, "grant_in_transaction", counting)  # the upkeep's refills
    return asked


def test_one_grant_covers_many_calls(transactional_db, user, grants_asked):
    budget = budget_for(user=user, limit="100")
    calls = [reserve(budget, "0.01") for _ in range(ALLOWANCE_CALLS)]
    assert len(grants_asked) == 1
    assert amounts(budget) == (0, Decimal("1"), [Decimal("1")])  # 100 worst cases, under a tenth of the room
    for reservations in calls:
        settle(reservations, "0.004")
    assert amounts(budget) == (Decimal("0.4"), Decimal("0.6"), [Decimal("0.6")])
    reserve(budget, "0.01")  # 0.6 free again: still no grant
    assert len(grants_asked) == 1


def test_a_busy_worker_asks_for_twice_its_last_grant(transactional_db, user, grants_asked):
    budget = budget_for(user=user, limit="1000")
    for _ in range(ALLOWANCE_CALLS + 1):  # the first grant used up well within ALLOWANCE_GROWTH_S
        reserve(budget, "0.01")
    assert [want for ((need, want),) in grants_asked] == [Decimal("1"), Decimal("2")]
    assert amounts(budget) == (0, Decimal("3"), [Decimal("3")])


def test_a_grant_takes_at_most_a_tenth_of_what_is_left(transactional_db, user):
    budget = budget_for(user=user, limit="10", spent="9")
    reserve(budget, "0.001")
    assert amounts(budget) == (Decimal("9"), Decimal("0.1"), [Decimal("0.1")])


def test_near_the_limit_a_grant_is_one_worst_case_as_exact_as_reserving_each_call(transactional_db, user):
    budget = budget_for(user=user, limit="1", spent="0.9")
    reserve(budget, "0.05")
    assert amounts(budget) == (Decimal("0.9"), Decimal("0.05"), [Decimal("0.05")])
    reserve(budget, "0.05")
    with pytest.raises(BudgetExceeded, match=r"is \$1.00 and \$1.00 is already spent or reserved"):
        reserve(budget, "0.000001")


def test_a_workers_own_unused_share_never_refuses_a_call_the_budget_has_room_for(transactional_db, user):
    budget = budget_for(user=user, limit="1")
    settle(reserve(budget, "0.6"), "0.1")  # 0.5 of the 0.6 granted is free again
    assert amounts(budget) == (Decimal("0.1"), Decimal("0.5"), [Decimal("0.5")])
    reserve(budget, "0.6")  # 0.1 + 0.6 <= 1: granted what was missing, 0.1
    assert amounts(budget) == (Decimal("0.1"), Decimal("0.6"), [Decimal("0.6")])
    with pytest.raises(BudgetExceeded):
        reserve(budget, "0.6")


def test_rows_settled_after_the_allowance_went_back_add_their_cost_only(transactional_db, user):
    budget = budget_for(user=user, limit="100")
    reservations = reserve(budget, "0.01")
    budgets_call_ended(reservations, Decimal("0.004"))
    assert budget_upkeep.return_all() == 1  # idle: back to the budget before its call's row was stored
    assert amounts(budget) == (0, 0, [])
    with transaction.atomic():
        budgets_settle([(reservations[0], Decimal("0.004"))])
    assert amounts(budget) == (Decimal("0.004"), 0, [])


def test_a_dead_workers_allowance_is_reclaimed_after_it_expires_and_its_rows_still_count(transactional_db, user):
    budget = budget_for(user=user, limit="100")
    dead_worker = str(uuid.uuid4())
    expired = timezone.now() - timedelta(seconds=1)
    BudgetAllowance.objects.create(
        id=dead_worker, budget=budget, period_start=PERIOD, amount_usd=Decimal("3"), expires_at=expired
    )
    alive = timezone.now() + timedelta(seconds=ALLOWANCE_TTL_S)
    BudgetAllowance.objects.create(
        id=uuid.uuid4(), budget=budget, period_start=PERIOD, amount_usd=Decimal("2"), expires_at=alive
    )
    Budget.objects.filter(pk=budget.pk).update(reserved_usd=Decimal("5"))
    reserve(budget, "0.01")  # the grant reclaims the expired allowance first, then grants 100 worst cases
    spent, reserved, held = amounts(budget)
    assert (spent, reserved, sorted(held)) == (0, Decimal("3"), [Decimal("1"), Decimal("2")])
    assert not BudgetAllowance.objects.filter(id=dead_worker).exists()
    # The dead worker's spool is replayed later: its call's cost is spent, its share left with the reclaim.
    with transaction.atomic():
        budgets_settle([(billing.budgets.Reservation(budget.id, Decimal("0.5"), PERIOD, dead_worker), Decimal("0.2"))])
    assert amounts(budget)[:2] == (Decimal("0.2"), Decimal("3"))


def test_a_worker_holding_allowances_sweeps_dead_workers_ones(transactional_db, user):
    budget = budget_for(user=user, limit="100")
    other = budget_for(user=get_user_model().objects.create_user("bob"), limit="100")
    reserve(budget, "0.01")  # this worker now holds an allowance, so its upkeep sweeps
    BudgetAllowance.objects.create(
        id=uuid.uuid4(), budget=other, period_start=PERIOD, amount_usd=Decimal("3"), expires_at=timezone.now()
    )
    Budget.objects.filter(pk=other.pk).update(reserved_usd=Decimal("3"))
    budget_allowances().idle_s = 60
    try:
        BudgetUpkeep(budget_allowances())()  # what the recorder thread runs after a flush
    finally:
        budget_allowances().idle_s = billing.budgets.ALLOWANCE_IDLE_S
    assert amounts(other) == (0, 0, [])
    assert amounts(budget) == (0, Decimal("1"), [Decimal("1")])


def test_a_worker_renews_its_allowances_and_drops_one_that_was_reclaimed(transactional_db, user, grants_asked, clock):
    ledger = budget_allowances()
    saved = ledger.clock, ledger.idle_s
    ledger.clock, ledger.idle_s = clock, 60  # this process's ledger on a fake clock; not idle yet
    try:
        budget = budget_for(user=user, limit="100")
        settle(reserve(budget, "0.01"), "0.01")
        (allowance,) = budget.allowances.all()
        BudgetAllowance.objects.filter(pk=allowance.pk).update(expires_at=timezone.now())
        upkeep = BudgetUpkeep(ledger)
        upkeep()
        allowance.refresh_from_db()
        assert allowance.expires_at > timezone.now() + timedelta(seconds=ALLOWANCE_TTL_S - 5)
        billing.budgets.allowances_release(BudgetAllowance.objects.all())  # reclaimed by another worker
        clock.now += ALLOWANCE_RENEW_S  # the next renewal is due
        upkeep()
        reserve(budget, "0.01")  # the old allowance was dropped: a new grant, a new allowance
    finally:
        ledger.clock, ledger.idle_s = saved
    assert len(grants_asked) == 2
    (new,) = budget.allowances.all()
    assert new.pk != allowance.pk
    assert amounts(budget) == (Decimal("0.01"), Decimal("1"), [Decimal("1")])


def spend_past_half_of_a_first_grant(*budgets: Budget) -> None:
    """Reserve calls of 0.01 until under half of each budget's first grant (1) is left, within ALLOWANCE_GROWTH_S."""
    for _ in range(ALLOWANCE_CALLS // 2 + 1):
        for budget in budgets:
            reserve(budget, "0.01")


def test_the_upkeep_refills_a_busy_allowance_so_that_calls_never_wait_for_a_grant(transactional_db, user, grants_asked):
    budget = budget_for(user=user, limit="1000")
    spend_past_half_of_a_first_grant(budget)
    assert len(grants_asked) == 1
    BudgetUpkeep(budget_allowances())()  # what the recorder thread runs after each flush
    assert grants_asked[1] == [(0, Decimal("2"))]  # nothing needed now, twice the last grant wanted
    assert amounts(budget) == (0, Decimal("3"), [Decimal("3")])
    for _ in range(ALLOWANCE_CALLS + 50):  # what was left plus the refill: no call asks for a grant
        reserve(budget, "0.01")
    assert len(grants_asked) == 2


def test_near_its_limit_a_budget_is_not_refilled_ahead(transactional_db, user, grants_asked):
    budget = budget_for(user=user, limit="1", spent="0.9")
    reserve(budget, "0.05")  # granted one worst case (a tenth of the room would be less): capped
    BudgetUpkeep(budget_allowances())()
    assert len(grants_asked) == 1
    assert amounts(budget) == (Decimal("0.9"), Decimal("0.05"), [Decimal("0.05")])


def test_a_refill_on_a_budget_over_its_limit_is_refused_and_the_others_still_refilled(
    transactional_db, user, grants_asked
):
    budget = budget_for(user=user, limit="1000")
    lowered = budget_for(user=get_user_model().objects.create_user("bob"), limit="1000")
    spend_past_half_of_a_first_grant(budget, lowered)
    Budget.objects.filter(pk=lowered.pk).update(limit_usd=Decimal("0.5"))  # an admin lowers it below its reserve
    BudgetUpkeep(budget_allowances())()
    assert amounts(budget)[1] == Decimal("3")
    assert amounts(lowered)[1] == Decimal("1")


def test_a_refill_for_a_budget_deleted_meanwhile_grants_nothing(transactional_db, user, grants_asked):
    budget = budget_for(user=user, limit="1000")
    spend_past_half_of_a_first_grant(budget)
    Budget.objects.filter(pk=budget.pk).delete()
    BudgetUpkeep(budget_allowances())()
    assert len(grants_asked) == 2 and not BudgetAllowance.objects.exists()


# ---------------------------------------------------------------------------- through the gateway


def test_budgeted_calls_through_the_gateway_ask_the_database_once(http, user, fake_model, recorded_calls, grants_asked):
    fake_model("m", "echo", price=(1, 2))
    budget = budget_for(user=user, limit="100")
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}
    assert [http.post("/v1/chat/completions", json=body).status_code for _ in range(20)] == [200] * 20
    calls = recorded_calls()
    assert len(grants_asked) == 1
    spent, reserved, held = amounts(budget)
    assert spent == sum(call.cost_usd for call in calls) and reserved == sum(held) > 0


def test_two_workers_spending_one_budget_never_pass_its_limit(gateway_worker_process, api_key, user, fake_model):
    fake_model("m", "echo+words=20+latency=20", price=(1000, 1000))
    messages = [{"role": "user", "content": "spend it"}]
    body = {"model": "m", "messages": messages, "max_tokens": 50}
    worst = worst_case_usd(body, output_tokens=50, usd_per_mtok=1000)
    limit = worst * 12
    budget = budget_for(user=user, limit=str(limit))
    workers = [gateway_worker_process(), gateway_worker_process()]

    async def calls_on(url: str) -> list[int]:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        ) as client:
            responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(20)))
        return [response.status_code for response in responses]

    async def both() -> list[int]:
        statuses = await asyncio.gather(*(calls_on(url) for url in workers))
        return statuses[0] + statuses[1]

    statuses = asyncio.run(both())
    assert set(statuses) == {200, 429} and statuses.count(200) >= 10
    # Each worker hands its allowance back once idle; by then every call's row is stored and settled.
    deadline = time.monotonic() + 15
    while (Call.objects.count() < len(statuses) or budget.allowances.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    spent_by_calls = sum(call.cost_usd for call in Call.objects.filter(status="ok"))
    assert amounts(budget) == (spent_by_calls, 0, [])
    assert spent_by_calls <= limit
