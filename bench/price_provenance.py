"""Micro-benchmark: what price provenance adds to a call's row (docs/benchmarks.md).

    SECRET_KEY=x .venv/bin/python -m bench.price_provenance

Times, per call, building the row (`call_row`) and its spool line (`spool_line`) with the five
provenance columns and without them (the same row with the columns removed), best of 5 × 50,000,
three rounds: the machine is shared, so read the rounds together.
"""

import os
import timeit

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routerweb.settings")
django.setup()

from bench.micro_registry import micro_registry  # noqa: E402
from billing.calls import call_row  # noqa: E402
from billing.price_provenance import PROVENANCE_COLUMNS, price_provenance_columns  # noqa: E402
from billing.spool import spool_line  # noqa: E402
from routing.metering import CallOutcome  # noqa: E402
from routing.usage import Usage  # noqa: E402

N = 50_000


def main() -> None:
    registry = micro_registry(price_id=7)
    price = registry.price
    outcome = CallOutcome(
        request_id="req_0123456789abcdef0123456789abcdef",
        created_at=registry.now,
        source="api",
        user_id=1,
        api_key_id=1,
        requested="gpt-4o",
        model=registry.model,
        status="ok",
        http_status=200,
        usage=Usage(prompt=1234, cached=200, completion=456),
        snapshot_part=registry.snapshot,
        attempts=[{"model": "gpt-4o", "outcome": "ok", "status": 200, "latency_ms": 10, "reason": "ok"}],
    )
    row = call_row(outcome)
    bare = {name: value for name, value in row.items() if name not in PROVENANCE_COLUMNS}
    cases = {
        "provenance columns (per call)": lambda: price_provenance_columns(price),
        "call_row (with provenance)": lambda: call_row(outcome),
        "spool_line, row with provenance": lambda: spool_line(row),
        "spool_line, same row without it": lambda: spool_line(bare),
    }
    for round_ in range(1, 4):
        for name, case in cases.items():
            best = min(timeit.repeat(case, number=N, repeat=5)) / N * 1e6
            print(f"round {round_}  {name:<34} {best:6.2f} µs")


if __name__ == "__main__":
    main()
