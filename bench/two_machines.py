"""Two routerweb machines behind HAProxy behave as one.

Usage: `.venv/bin/python -m bench.two_machines [--database-url URL] [--redis-url URL] [--requests 10000]
[--concurrency 32]` (PostgreSQL and Redis are required: the defaults are this machine's). Prints a
Markdown report; exit status 0 when every check holds, 2 otherwise.

Set-up, all on loopback: a fresh PostgreSQL database and a Redis key prefix shared by two routerweb
instances started with the production command, each with its own port, spool directory and metrics
directory (as two machines would have), behind Debian's HAProxy (`balance roundrobin`, health checks
on /readyz, a refused connection retried on the other instance). The fake upstream fails 20% of
attempts at random in five ways (HTTP 500, 503, 429, a malformed body, a closed connection): model
`mixed` is a route over three such models.

1. Load: `--requests` chat completions at `--concurrency` through HAProxy. When a quarter of them are
   answered, instance A gets SIGTERM (and is started again once it has exited); at half, instance B
   gets SIGKILL (and is started again a second later, with the same spool directory, which it replays).
   Reported: router 500s (target 0), statuses, throughput, p50/p99; rows against answered requests by
   request id (every answered request has its row: A's shutdown loses nothing, and B's answered calls
   come back from its spool), and each row's cost against the upstream's usage in the answer, exactly.
2. Budget: a key with a budget of $0.01, its calls sent to A and B alternately at concurrency 8 until
   both refuse; what was spent may pass the limit by at most one call's worst case.
3. Circuit: a model whose upstream always fails is called on A until its circuit opens
   (`CIRCUIT_FAILURES` calls: the instances open a circuit after that many consecutive failures, not 3,
   so that 20% random failures do not open them); then B is called: it must skip the model without
   asking the upstream.
4. Registry: a model added through `manage.py import_registry` in A's environment; B is polled until it
   serves it (target: within a second of the command's end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx

from .harness import (
    BENCH_USER,
    HOST,
    BenchError,
    BenchSandbox,
    Server,
    api_key_create,
    free_port,
    http_json,
    manage,
    redact_url,
    routerweb_command,
    server_start,
    upstream_command,
    wait_ready,
)
from .sse_client import percentile

PRICE_IN, PRICE_OUT = Decimal(1), Decimal(2)  # USD per million tokens
BUDGET_USD = Decimal("0.01")
MESSAGES = [{"role": "user", "content": "Two machines, one gateway: say hello in a few words."}]
FLAKY = "echo+flaky=20"
# Consecutive failures that open a circuit. The default (3) opens one now and then under 20% random
# failures (and all three at times: 502s for 30 s); a deployment facing such a provider raises it.
CIRCUIT_FAILURES = 10


def registry(upstream_url: str, *, extra: bool = False) -> dict:
    price = {"input_per_mtok": int(PRICE_IN), "output_per_mtok": int(PRICE_OUT)}
    models = {"flaky-a": FLAKY, "flaky-b": FLAKY, "flaky-c": FLAKY, "steady": "echo", "broken": "echo+status=503"}
    if extra:
        models["late-model"] = "echo"
    return {
        "providers": [{"name": "fake", "base_url": upstream_url, "timeout_s": 30, "connect_timeout_s": 2}],
        "models": [{"name": n, "provider": "fake", "upstream_model": u, "price": price} for n, u in models.items()],
        "routes": [
            {
                "name": "mixed",
                "strategy": "ordered",
                "targets": [{"model": m} for m in ("flaky-a", "flaky-b", "flaky-c")],
            }
        ],
    }


HAPROXY_CFG = """
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch 1
frontend routerweb
    bind {host}:{port}
    default_backend machines
backend machines
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host {host}
    http-check expect status 200
    default-server inter 500ms fall 1 rise 2
    server a {host}:{port_a} check
    server b {host}:{port_b} check
"""


@dataclass
class Machine:
    name: str
    port: int
    env: dict[str, str]
    tmp: Path
    server: Server | None = None
    events: list[str] = field(default_factory=list)

    def start(self) -> None:
        metrics = Path(self.env["PROMETHEUS_MULTIPROC_DIR"])
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        self.server = server_start(
            f"routerweb-{self.name}", routerweb_command(self.port), self.port, self.env, self.tmp
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass
class Answer:
    status: int
    request_id: str
    latency_s: float
    usage: dict | None = None
    body: bytes = b""


def _prepare(sandbox: BenchSandbox, upstream_url: str) -> tuple[str, str]:
    env = sandbox.env
    manage(env, "migrate", "--no-input", "--verbosity", "0")
    path = sandbox.tmp / "registry.yaml"
    path.write_text(json.dumps(registry(upstream_url)), encoding="utf-8")
    manage(env, "import_registry", str(path))
    create = (
        "from django.contrib.auth import get_user_model; U = get_user_model(); "
        f"U.objects.create_user({BENCH_USER!r}, password=None); U.objects.create_user('budgeted', password=None)"
    )
    manage(env, "shell", "--no-imports", "-c", create)
    key = api_key_create(env, BENCH_USER, "load")
    budget_key = api_key_create(env, "budgeted", "budget")
    budget = (
        "from decimal import Decimal; from billing.models import Budget; from routing.models import ApiKey; "
        "key = ApiKey.objects.get(user__username='budgeted'); "
        f"Budget.objects.create(api_key=key, limit_usd=Decimal('{BUDGET_USD}'))"
    )
    manage(env, "shell", "--no-imports", "-c", budget)
    return key, budget_key


async def _call(client: httpx.AsyncClient, url: str, key: str, model: str, **extra) -> Answer:
    started = time.perf_counter()
    body = {"model": model, "messages": MESSAGES, **extra}
    try:
        response = await client.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
    except httpx.TransportError as error:
        return Answer(0, "", time.perf_counter() - started, body=repr(error).encode())
    usage = None
    if response.status_code == 200:
        usage = response.json().get("usage")
    return Answer(
        response.status_code,
        response.headers.get("x-request-id", ""),
        time.perf_counter() - started,
        usage,
        response.content,
    )


def _stop_and_restart(machine: Machine, sig: int, restart_after_s: float) -> None:
    """In a thread: signal the instance, wait for it to exit, start it again after `restart_after_s`."""
    process = machine.server.process
    machine.events.append(f"{time.strftime('%H:%M:%S')} {signal.Signals(sig).name}")
    process.send_signal(sig)
    process.wait(timeout=60)
    machine.events.append(f"{time.strftime('%H:%M:%S')} exited ({process.returncode})")
    time.sleep(restart_after_s)
    machine.start()
    wait_ready(machine.server, "/readyz")
    machine.events.append(f"{time.strftime('%H:%M:%S')} ready again")


async def load(url: str, key: str, total: int, concurrency: int, a: Machine, b: Machine) -> tuple[list[Answer], float]:
    answers: list[Answer] = []
    queue = iter(range(total))
    threads: list[threading.Thread] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in queue:
            answers.append(await _call(client, url, key, "mixed"))
            done = len(answers)
            if done == total // 4:
                threads.append(threading.Thread(target=_stop_and_restart, args=(a, signal.SIGTERM, 0.0)))
                threads[-1].start()
            elif done == total // 2:
                threads.append(threading.Thread(target=_stop_and_restart, args=(b, signal.SIGKILL, 1.0)))
                threads[-1].start()

    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    for thread in threads:
        thread.join(timeout=120)
    return answers, elapsed


def _rows(env: dict[str, str]) -> dict[str, tuple[str, int, int, str]]:
    """request_id -> (cost, prompt tokens, completion tokens, api key prefix) of every call row."""
    script = (
        "import json; from billing.models import Call; "
        "print(json.dumps({c.request_id: [str(c.cost_usd), c.prompt_tokens, c.completion_tokens, "
        "c.api_key_id] for c in Call.objects.all()}))"
    )
    return json.loads(manage(env, "shell", "--no-imports", "-c", script).strip().splitlines()[-1])


def rows_settled(env: dict[str, str], wanted: set[str], timeout_s: float = 90.0) -> dict:
    """The call rows, once every wanted request id has one (or after `timeout_s`: the spool replays)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = _rows(env)
        if wanted <= rows.keys() or time.monotonic() > deadline:
            return rows
        time.sleep(2)


def _replayed_rows(machine: Machine) -> int:
    """Rows the machine's current process replayed from a dead process's spool (its log says so)."""
    text = machine.server.log_path.read_text(errors="replace")
    return sum(int(m) for m in re.findall(r"replayed (\d+) call rows", text))


def exact_cost(usage: dict) -> Decimal:
    return (Decimal(usage["prompt_tokens"]) * PRICE_IN + Decimal(usage["completion_tokens"]) * PRICE_OUT) / 10**6


async def budget_phase(a: Machine, b: Machine, key: str) -> list[Answer]:
    answers: list[Answer] = []
    refused = 0

    async def worker(client: httpx.AsyncClient, index: int) -> None:
        nonlocal refused
        while refused < 16 and len(answers) < 5000:
            url = (a, b)[(index + len(answers)) % 2].url
            answer = await _call(client, url, key, "steady", max_tokens=16)
            answers.append(answer)
            if answer.status == 429:
                refused += 1

    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(worker(client, index) for index in range(8)))
    return answers


def circuit_phase(a: Machine, b: Machine, key: str, upstream_url: str) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "broken", "messages": MESSAGES}
    with httpx.Client(headers=headers, timeout=30) as client:
        on_a = [client.post(f"{a.url}/v1/chat/completions", json=body) for _ in range(CIRCUIT_FAILURES)]
        before = int(http_json(upstream_url + "/_fake/stats")["requests"])
        on_b = client.post(f"{b.url}/v1/chat/completions", json=body)
        after = int(http_json(upstream_url + "/_fake/stats")["requests"])
    message = on_b.json()["error"]["message"]
    return {
        "a_statuses": [r.status_code for r in on_a],
        "b_status": on_b.status_code,
        "b_upstream_requests": after - before,
        "b_message": message,
        "honoured": after == before and "circuit open" in message,
    }


def registry_phase(a: Machine, b: Machine, key: str, upstream_url: str) -> float:
    path = a.tmp / "registry-late.yaml"
    path.write_text(json.dumps(registry(upstream_url, extra=True)), encoding="utf-8")
    manage(a.env, "import_registry", str(path))
    done = time.monotonic()
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "late-model", "messages": MESSAGES}
    with httpx.Client(headers=headers, timeout=10) as client:
        while time.monotonic() - done < 10:
            if client.post(f"{b.url}/v1/chat/completions", json=body).status_code == 200:
                return time.monotonic() - done
            time.sleep(0.02)
    return float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/routerweb_two_machines")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    if not shutil.which("haproxy"):
        raise BenchError("haproxy is not installed: apt-get install -y haproxy")
    with BenchSandbox(database_url=args.database_url, redis_url=args.redis_url) as sandbox:
        upstream = sandbox.serve("fake-upstream", upstream_command)
        wait_ready(upstream, "/models")
        key, budget_key = _prepare(sandbox, upstream.url)
        machines = []
        for name in ("a", "b"):
            env = {
                **sandbox.env,
                "ROUTERWEB_SPOOL_DIR": str(sandbox.tmp / f"spool-{name}"),
                "PROMETHEUS_MULTIPROC_DIR": str(sandbox.tmp / f"metrics-{name}"),
                "LOG_CALLS_LEVEL": "WARNING",
                "ROUTERWEB_SHUTDOWN_GRACE_S": "30",
                "ROUTERWEB_CIRCUIT_FAILURES": str(CIRCUIT_FAILURES),
            }
            machine = Machine(name, free_port(), env, sandbox.tmp)
            machine.start()
            machines.append(machine)
        a, b = machines
        try:
            for machine in machines:
                wait_ready(machine.server, "/readyz")
            lb_port = free_port()
            cfg = sandbox.tmp / "haproxy.cfg"
            cfg.write_text(HAPROXY_CFG.format(host=HOST, port=lb_port, port_a=a.port, port_b=b.port))
            haproxy = server_start("haproxy", ["haproxy", "-f", str(cfg), "-db"], lb_port, sandbox.env, sandbox.tmp)
            try:
                time.sleep(1.5)  # both servers checked up
                lb = f"http://{HOST}:{lb_port}"
                answers, elapsed = asyncio.run(load(lb, key, args.requests, args.concurrency, a, b))
                budget_answers = asyncio.run(budget_phase(a, b, budget_key))
                circuit = circuit_phase(a, b, key, upstream.url)
                registry_s = registry_phase(a, b, key, upstream.url)
                flaky = int(http_json(upstream.url + "/_fake/stats")["flaky_failures"])
                upstream_requests = int(http_json(upstream.url + "/_fake/stats")["requests"])
                answered_ids = {x.request_id for x in answers + budget_answers if x.request_id}
                rows = rows_settled(sandbox.env, answered_ids)
                replayed = _replayed_rows(b)
            finally:
                haproxy.stop()
            report = _report(
                args, answers, elapsed, budget_answers, rows, circuit, registry_s, a, b, flaky, upstream_requests
            )
            report["text"] += f"\n\nRows B's new process replayed from the spool of the killed one: {replayed}."
        finally:
            for machine in machines:
                if machine.server is not None:
                    machine.server.stop()
    print(report["text"])
    return 0 if report["ok"] else 2


def _report(args, answers, elapsed, budget_answers, rows, circuit, registry_s, a, b, flaky, upstream_requests) -> dict:
    statuses: dict[int, int] = {}
    for x in answers:
        statuses[x.status] = statuses.get(x.status, 0) + 1
    status_text = ", ".join(f"{status or 'no answer'}: {count}" for status, count in sorted(statuses.items()))
    router_500 = sum(1 for x in answers if x.status == 500 and x.request_id)
    answered = [x for x in answers if x.request_id]
    unanswered = [x for x in answers if not x.request_id]
    missing = [x.request_id for x in answered if x.request_id not in rows]
    ok = [x for x in answered if x.status == 200 and x.usage]
    cost_mismatch = [x.request_id for x in ok if Decimal(rows.get(x.request_id, ["-1"])[0]) != exact_cost(x.usage)]
    latencies = sorted(x.latency_s * 1000 for x in answers)
    budget_rows = [rows[x.request_id] for x in budget_answers if x.request_id in rows and x.status == 200]
    spent = sum((Decimal(r[0]) for r in budget_rows), Decimal(0))
    # The worst case the budget reserves for one such call: the prompt's bound (its UTF-8 bytes + a
    # margin per message, at most) at the input price, plus max_tokens=16 at the output price.
    one_call_max = max((Decimal(r[0]) for r in budget_rows), default=Decimal(0))
    overshoot = spent - BUDGET_USD
    budget_ok = overshoot <= one_call_max
    refused = sum(1 for x in budget_answers if x.status == 429)
    checks = {
        "router 500s = 0": router_500 == 0,
        "every answered request has its row": not missing,
        "costs exact": not cost_mismatch,
        "budget overshoot ≤ one call": budget_ok,
        "circuit honoured by the other instance": circuit["honoured"],
        "registry change in force on the other instance within 1 s": registry_s <= 1.0,
    }
    lines = [
        "### Two machines behind HAProxy",
        "",
        f"- Command: `.venv/bin/python -m bench.two_machines --database-url {redact_url(args.database_url)} "
        f"--redis-url {args.redis_url} --requests {args.requests} --concurrency {args.concurrency}`",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; HAProxy "
        f"{subprocess.run(['haproxy', '-v'], capture_output=True, text=True).stdout.split()[2]}",
        f"- Load: {len(answers)} requests to route `mixed` (three models, the fake upstream failing"
        f" {flaky} of its {upstream_requests} requests at random, 20% of the route's attempts) at concurrency"
        f" {args.concurrency} in {elapsed:.1f} s: **{len(answers) / elapsed:.0f} req/s**, p50"
        f" **{percentile(latencies, 50):.1f} ms**, p99 **{percentile(latencies, 99):.1f} ms**",
        f"- Instance A: {'; '.join(a.events)}. Instance B: {'; '.join(b.events)}.",
        f"- Statuses: {status_text};"
        f" router 500s: **{router_500}**; answered by routerweb: {len(answered)}; without routerweb's answer"
        f" (cut when B was killed: HAProxy's 502 or a reset): {len(unanswered)}",
        f"- Rows: {len(answered) - len(missing)} of the {len(answered)} answered requests have their row by"
        f" request id (missing: **{len(missing)}**); costs: {len(ok) - len(cost_mismatch)} of {len(ok)} rows"
        f" equal the upstream's usage × price exactly (mismatches: **{len(cost_mismatch)}**)",
        f"- Budget ${BUDGET_USD} on one key, calls to A and B alternately at concurrency 8: {len(budget_rows)}"
        f" answered, {refused} refused (429); spent ${spent} (overshoot ${overshoot}, one call at most"
        f" ${one_call_max})",
        f"- Circuit: A's {CIRCUIT_FAILURES} calls (statuses {sorted(set(circuit['a_statuses']))}); then B"
        f" answered {circuit['b_status']} with"
        f' {circuit["b_upstream_requests"]} upstream requests: "{circuit["b_message"][:120]}"',
        f"- Registry: a model imported in A's environment served by B **{registry_s * 1000:.0f} ms** after the"
        " import command returned",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {name} | {'met' if passed else '**not met**'} |" for name, passed in checks.items()],
    ]
    if missing:
        lines.append(f"\nMissing rows (first 10): {missing[:10]}")
    if cost_mismatch:
        lines.append(f"\nCost mismatches (first 10): {cost_mismatch[:10]}")
    return {"text": "\n".join(lines), "ok": all(checks.values())}


if __name__ == "__main__":
    sys.exit(main())
