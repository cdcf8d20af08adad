"""routerweb's metering backend: prices, budgets and cost rows behind routing's `Meter` contract.

`BillingMeter` is what `ROUTERWEB_METER` names by default. Its part of the registry snapshot
(`BillingSnapshot`: every price of every model, and which budget applies to which user and key) is
loaded with the registry and reloaded with it, so reserving a call reads no database; `reserve`
draws the call's worst case from the worker's budget allowances (billing/budgets.py) and `record`
turns the outcome into the call row (billing/calls.py).
"""

import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from routing.errors import ApiError
from routing.metering import CallOutcome, CallPlan, Meter, RecordedCall, Reserved, StoredCall
from routing.router import Attempt
from routing.snapshot import ModelSnap
from routing.usage import Usage

from .body_policy import BodyPolicy, body_policy_load
from .budget_upkeep import budget_upkeep
from .budgets import BudgetExceeded, BudgetsUnavailable, budgets_reserve, worst_case_cost
from .calls import call_outcome_record
from .price_provenance import price_provenance_text
from .pricing import PriceSnap, cost_for_usage, prompt_tokens_bound
from .recorder import call_recorder

logger = logging.getLogger("routerweb.metering")

UNPRICED_UNDER_BUDGET = "no price, and the call counts against a budget (a price of 0 marks a model free)"


@dataclass(frozen=True)
class BillingSnapshot:
    """Billing's part of a registry snapshot."""

    # Per model id, oldest first; the price for a call is the last one with effective_from <= its time.
    prices: dict[int, tuple[PriceSnap, ...]] = field(default_factory=dict)
    budget_by_user: dict[int, int] = field(default_factory=dict)  # user id -> budget id
    budget_by_key: dict[int, int] = field(default_factory=dict)  # API key id -> budget id
    bodies: BodyPolicy = field(default_factory=BodyPolicy)  # which calls get their bodies stored

    def price_at(self, model: ModelSnap, at: datetime) -> PriceSnap | None:
        for price in reversed(self.prices.get(model.id, ())):
            if price.effective_from <= at:
                return price
        return None

    def budget_ids(self, *, user_id: int | None, key_id: int | None) -> list[int]:
        """The budgets a call by this user with this key counts against."""
        ids = [self.budget_by_user.get(user_id), self.budget_by_key.get(key_id)]
        return [budget_id for budget_id in ids if budget_id is not None]


def billing_snapshot_load() -> BillingSnapshot:
    """Every price, budget assignment and body storage rule, from the database (synchronous; three queries)."""
    from .models import Budget, Price

    prices: dict[int, list[PriceSnap]] = {}
    for price in Price.objects.order_by("model_id", "effective_from"):
        prices.setdefault(price.model_id, []).append(
            PriceSnap(
                price.effective_from,
                price.input_per_mtok,
                price.output_per_mtok,
                price.cached_input_per_mtok,
                price.cache_write_per_mtok,
                id=price.id,
            )
        )
    budget_by_user, budget_by_key = {}, {}
    for budget_id, user_id, key_id in Budget.objects.values_list("id", "user_id", "api_key_id"):
        if user_id is not None:
            budget_by_user[user_id] = budget_id
        else:
            budget_by_key[key_id] = budget_id
    return BillingSnapshot(
        prices={model_id: tuple(rows) for model_id, rows in prices.items()},
        budget_by_user=budget_by_user,
        budget_by_key=budget_by_key,
        bodies=body_policy_load(),
    )


class BillingMeter(Meter):
    def snapshot_part(self) -> BillingSnapshot:
        return billing_snapshot_load()

    async def reserve(self, plan: CallPlan) -> Reserved:
        """Reserve the call's worst case on the user's and the key's budgets (if any). Under a budget a
        candidate without a price is skipped, with the reason in the trace (its cost has no bound);
        ApiError 403 when none is left, 429 when a budget would go over, 503 when the database cannot
        be asked."""
        snapshot: BillingSnapshot = plan.snapshot_part
        budget_ids = snapshot.budget_ids(user_id=plan.user_id, key_id=plan.api_key_id)
        if not budget_ids:
            return Reserved(plan.candidates)
        candidates = _priced_candidates(plan, snapshot)
        amount = worst_case_cost(
            [(model, snapshot.price_at(model, plan.created_at)) for model in candidates],
            prompt_tokens=prompt_tokens_bound(body=plan.request.body, body_size=plan.request.body_size),
            max_tokens=plan.request.max_tokens,
            choices=plan.request.choices,
        )
        try:
            reservations = await budgets_reserve(
                budget_ids=budget_ids, amount=amount, at=plan.created_at, registry_version=plan.registry_version
            )
        except BudgetExceeded as exceeded:
            raise ApiError(429, str(exceeded), code="budget_exceeded", type="insufficient_quota") from None
        except BudgetsUnavailable:
            logger.exception("budgets could not be reserved for %s", plan.request_id)
            message = "routerweb could not check this call against its budgets (database unavailable); try again."
            code = "budget_check_unavailable"
            raise ApiError(503, message, code=code, type="server_error", retry_after_s=1) from None
        return Reserved(candidates, reservations)

    def record(self, outcome: CallOutcome) -> None:
        call_outcome_record(outcome)

    def usage_cost(self, snapshot_part: BillingSnapshot, model: ModelSnap, usage: Usage, at: datetime) -> str | None:
        """The call's exact cost with the price in force at `at`, as recorded in its row; None when unpriced."""
        price = snapshot_part.price_at(model, at) if snapshot_part is not None else None
        if price is None:
            return None
        cost = cost_for_usage(
            price,
            prompt_tokens=usage.prompt,
            cached_tokens=usage.cached,
            completion_tokens=usage.completion,
            cache_write_tokens=usage.cache_write,
        )
        return _decimal_text(cost)

    def recorded_calls(self, *, user_id: int, request_ids: Iterable[str]) -> dict[str, RecordedCall]:
        from .models import Call

        calls = Call.objects.select_related("model", "provider").filter(user_id=user_id, request_id__in=request_ids)
        return {call.request_id: _recorded(call) for call in calls}

    def stored_call(self, *, viewer, request_id: str) -> StoredCall | None:
        """The call and its body if `viewer` may see it: the dashboard's rules (their own calls, or
        everyone's with the spend permission)."""
        from .call_bodies import call_body_for
        from .dashboard.call_detail import call_for_viewer

        call = call_for_viewer(viewer=viewer, request_id=request_id)
        if call is None:
            return None
        own = call.user_id == viewer.pk
        body = call_body_for(request_id)
        if body is None:
            return StoredCall(call=_recorded(call), own=own, body_stored=False)
        return StoredCall(
            call=_recorded(call),
            own=own,
            body_stored=True,
            messages=body.messages,
            parameters=body.parameters,
            answer=body.answer,
            tool_calls=body.tool_calls if isinstance(body.tool_calls, list) else [],
            request_truncated=body.request_truncated,
            answer_truncated=body.answer_truncated,
        )

    def health(self) -> dict[str, float]:
        recorder = call_recorder()
        return {
            "recorder_backlog_rows": recorder.backlog_rows,
            "recorder_spool_bytes": _spool_bytes(recorder.spool_dir),
            "recorder_alive": 1.0 if recorder.alive else 0.0,
        }

    def shared_gauges(self) -> dict[str, float]:
        from .models import QuarantinedRow

        return {"quarantined_rows": QuarantinedRow.objects.count()}

    def ready(self) -> dict[str, bool]:
        return {"recorder": call_recorder().alive}

    def start(self) -> None:
        call_recorder().start()

    def stop(self) -> None:
        call_recorder().stop()
        try:
            budget_upkeep.return_all()
        except Exception:  # the database is down: the allowances expire and are reclaimed
            logger.exception("could not hand back this worker's budget allowances")


def _spool_bytes(spool_dir: Path) -> int:
    """Bytes in this process's spool files (each worker has its own; the metrics add the workers up)."""
    total = 0
    for path in spool_dir.glob(f"calls-{os.getpid()}-*"):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def _priced_candidates(plan: CallPlan, snapshot: BillingSnapshot) -> list[ModelSnap]:
    priced = []
    for model in plan.candidates:
        if snapshot.price_at(model, plan.created_at) is None:
            plan.trace.attempts.append(Attempt(model.name, "skipped", UNPRICED_UNDER_BUDGET))
        else:
            priced.append(model)
    if not priced:
        message = (
            f"{plan.request.model!r} has no priced model to answer, and this call counts against a budget: its cost "
            "could not be bounded. An admin can set a price (0 marks a model free)."
        )
        raise ApiError(403, message, code="model_unpriced", param="model")
    return priced


def _recorded(call) -> RecordedCall:
    return RecordedCall(
        request_id=call.request_id,
        requested=call.requested,
        model=call.model.name if call.model else None,
        model_id=call.model_id,
        provider=call.provider.name if call.provider else None,
        status=call.status,
        http_status=call.http_status,
        error_code=call.error_code,
        stream=call.stream,
        prompt_tokens=call.prompt_tokens,
        cached_tokens=call.cached_tokens,
        cache_write_tokens=call.cache_write_tokens,
        completion_tokens=call.completion_tokens,
        usage_estimated=call.usage_estimated,
        cost_usd=_decimal_text(call.cost_usd),
        unpriced=call.unpriced,
        latency_ms=call.latency_ms,
        ttft_ms=call.ttft_ms,
        client_disconnected=call.client_disconnected,
        attempts=call.attempts,
        price_text=price_provenance_text(call),
    )


def _decimal_text(value: Decimal | None) -> str | None:
    # A string keeps the exact amount through JSON; normalize() drops the 12 stored places' trailing zeros.
    return None if value is None else format(value.normalize(), "f")
