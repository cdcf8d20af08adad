"""Budget upkeep, run by the call recorder's thread after each flush: allowances handed back when idle,
refilled ahead of need, renewed, and dead workers' ones reclaimed (the rules: billing/budgets.py)."""

import threading
from decimal import Decimal

from django.utils import timezone

from .allowances import AllowanceLedger, Grant
from .budgets import (
    ALLOWANCE_GROWTH_S,
    ALLOWANCE_REFILL_BELOW,
    ALLOWANCE_RENEW_S,
    GrantRefused,
    GrantRequest,
    allowances_release,
    allowances_renew,
    budget_allowances,
    grant_in_transaction,
    period_start_for,
)
from .models import BudgetAllowance


class BudgetUpkeep:
    """Run after each flush of the call recorder: hands back idle allowances, refills those running low;
    every `ALLOWANCE_RENEW_S` renews this worker's allowances and reclaims those of dead workers."""

    def __init__(self, ledger: AllowanceLedger):
        self.ledger = ledger
        self._renew_due = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            returnable = self.ledger.take_returnable()
            if returnable:
                allowances_release(BudgetAllowance.objects.filter(id__in=returnable))
            self._refill()
            now = self.ledger.clock()
            if now >= self._renew_due:
                self._renew_due = now + ALLOWANCE_RENEW_S
                held = self.ledger.held_ids()
                if held:  # a worker spending budgets also sweeps dead workers' allowances (grants do too)
                    self.ledger.confirm(allowances_renew(held), held, confirmed_at=now)
                    allowances_release(BudgetAllowance.objects.filter(expires_at__lt=timezone.now()))

    def _refill(self) -> None:
        """Top up the allowances running low, in one transaction, before calls find them short and wait."""
        refills = self.ledger.refills_due(below_share=ALLOWANCE_REFILL_BELOW, growth_s=ALLOWANCE_GROWTH_S)
        grants: list[Grant] = []
        confirmed_at = self.ledger.clock()
        try:
            period = period_start_for(timezone.now())
            # Nothing is needed (no call waits for a refill), so only a budget already over its limit refuses.
            # An allowance of last month is not refilled: this month's calls start a new one.
            requests = {
                refill.budget_id: GrantRequest(refill.budget_id, refill.allowance_id, need=Decimal(0), want=refill.want)
                for refill in refills
                if refill.period_start == period
            }
            while requests:
                try:
                    grants = grant_in_transaction(list(requests.values()), period)  # deleted budgets: no grant
                    break
                except GrantRefused as refused:
                    del requests[refused.budget_id]
        finally:
            self.ledger.refill_ended(refills, grants, confirmed_at=confirmed_at)

    def return_all(self) -> int:
        """Hand back every allowance with no call in flight (at shutdown); returns how many."""
        with self._lock:
            returnable = self.ledger.take_returnable(everything=True)
            if returnable:
                allowances_release(BudgetAllowance.objects.filter(id__in=returnable))
            return len(returnable)


budget_upkeep = BudgetUpkeep(budget_allowances())
