"""SIGTERM: a worker stops accepting, lets its calls in flight (streams included) finish within the
grace period, stores every row and exits; no client of such a call sees a reset."""

import signal
import threading
import time
from decimal import Decimal

import httpx

from billing.models import Budget, BudgetAllowance, Call
from tests.conftest import calls_settle

HELLO = [{"role": "user", "content": "hello router"}]
STREAMS = 6
WORDS = 15
CHUNK_DELAY_MS = 100  # each stream lasts about 1.5 s


def test_sigterm_lets_streams_in_flight_finish_and_loses_no_row(gateway_worker_process, api_key, fake_model, user):
    fake_model("slow-stream", f"echo+words={WORDS}+chunk-delay={CHUNK_DELAY_MS}", price=(1, 2))
    fake_model("quick", "echo+words=3", price=(1, 2))
    budget = Budget.objects.create(user=user, limit_usd=Decimal("100"))
    url = gateway_worker_process(ROUTERWEB_SHUTDOWN_GRACE_S="20")
    (process,) = gateway_worker_process.processes
    headers = {"Authorization": f"Bearer {api_key}"}
    results: list[tuple[str, bytes]] = []
    started = threading.Barrier(STREAMS + 1)

    def stream() -> None:
        body = {"model": "slow-stream", "messages": HELLO, "stream": True}
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30) as response:
                chunks = response.iter_bytes()
                first = next(chunks)
                started.wait(timeout=10)
                results.append((response.headers["X-Request-Id"], first + b"".join(chunks)))
        except Exception as error:  # a reset or a cut stream
            results.append(("", repr(error).encode()))
            started.abort()

    with httpx.Client(base_url=url, headers=headers) as http:
        quick = [http.post("/v1/chat/completions", json={"model": "quick", "messages": HELLO}) for _ in range(5)]
    assert all(r.status_code == 200 for r in quick)

    threads = [threading.Thread(target=stream) for _ in range(STREAMS)]
    for thread in threads:
        thread.start()
    started.wait(timeout=10)  # every stream has its first bytes: all are in flight
    sent_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=30)
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    exited_after = time.monotonic() - sent_at

    assert len(results) == STREAMS
    for request_id, body in results:
        assert request_id, body  # no reset, no error
        assert body.rstrip().endswith(b"data: [DONE]"), body[-200:]
    assert exited_after < 20
    calls_settle()
    request_ids = {request_id for request_id, _ in results} | {r.headers["X-Request-Id"] for r in quick}
    stored = Call.objects.filter(request_id__in=request_ids)
    assert stored.count() == STREAMS + len(quick)
    assert all(call.status == "ok" and not call.client_disconnected for call in stored)
    # The worker handed back its budget allowance: nothing stays reserved, the spend is the rows' sum.
    budget.refresh_from_db()
    assert not BudgetAllowance.objects.exists()
    assert budget.reserved_usd == 0
    assert budget.spent_usd == sum(call.cost_usd for call in stored)
    # Nothing was left in the worker's spool for a later replay: every row is stored.
    spool_dir = __import__("django.conf", fromlist=["settings"]).settings.ROUTERWEB_SPOOL_DIR
    leftovers = [p for p in spool_dir.glob("worker-*/calls-*.jsonl") if p.stat().st_size]
    assert not leftovers


def test_a_new_connection_is_refused_once_the_worker_is_stopping(gateway_worker_process, api_key, fake_model):
    fake_model("slow-stream", "echo+words=10+chunk-delay=100")
    url = gateway_worker_process(ROUTERWEB_SHUTDOWN_GRACE_S="20")
    (process,) = gateway_worker_process.processes
    headers = {"Authorization": f"Bearer {api_key}"}
    body = {"model": "slow-stream", "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30) as response:
        chunks = response.iter_bytes()
        next(chunks)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            refused = httpx.get(f"{url}/healthz", timeout=2).status_code
        except httpx.TransportError:
            refused = "refused"
        rest = b"".join(chunks)
    assert refused == "refused"
    assert rest.rstrip().endswith(b"data: [DONE]")
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
