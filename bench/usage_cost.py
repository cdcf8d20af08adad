"""Micro-benchmark: the CPU that `usage.cost` adds to one answer (docs/benchmarks.md).

    SECRET_KEY=x .venv/bin/python -m bench.usage_cost

Times, per answer, what the gateway does on top of relaying it: the meter's `usage_cost` (the price
lookup in the registry snapshot and the exact Decimal cost) plus adding the field to a non-streamed
answer (parse and re-serialize the body) or to the final usage chunk of a stream.
"""

import os
import timeit

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routerweb.settings")
django.setup()

import orjson  # noqa: E402

from bench.micro_registry import micro_registry  # noqa: E402
from billing.metering import BillingMeter  # noqa: E402
from routing.usage import Usage, answer_with_cost, usage_with_cost  # noqa: E402

N = 50_000


def main() -> None:
    registry = micro_registry()
    now, model, snapshot = registry.now, registry.model, registry.snapshot
    meter = BillingMeter()
    usage = Usage(prompt=1234, cached=200, completion=456)
    answer = orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "word " * 150}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1234, "completion_tokens": 456, "total_tokens": 1690},
        }
    )
    chunk = orjson.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {"prompt_tokens": 1234, "completion_tokens": 456},
        }
    )

    def cost():
        return meter.usage_cost(snapshot, model, usage, now)

    def json_answer():
        return answer_with_cost(answer, cost())

    def stream_chunk():
        event = orjson.loads(chunk)
        usage_with_cost(event, cost())
        return orjson.dumps(event)

    def relay_chunk_unchanged():  # what the relay already did for the usage chunk: parse it
        return orjson.loads(chunk)

    for name, fn in [
        ("usage_cost (price lookup + Decimal cost)", cost),
        (f"non-streamed answer of {len(answer)} bytes: cost + re-serialize", json_answer),
        ("final stream chunk: parse + cost + serialize", stream_chunk),
        ("  (baseline: parsing that chunk, already done)", relay_chunk_unchanged),
    ]:
        best = min(timeit.repeat(fn, number=N, repeat=5)) / N
        print(f"{name:60s} {best * 1e6:6.2f} µs")


if __name__ == "__main__":
    main()
