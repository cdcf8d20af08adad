"""One log line per call, on logger `routerweb.calls` at INFO, from the gateway's record path.

Fields: request id, user id, key prefix, source, kind (chat or embeddings), requested model, the model
that answered, attempts (tries), status, HTTP status, error code, latency, routerweb's overhead, cost.
Never a secret; never the prompt or the completion unless an operator turns on `ROUTERWEB_LOG_CONTENT`
(then the prompt's messages are added; a streamed completion is not kept, so only its length is). With
`LOG_FORMAT=json` each line is one JSON object (routerweb/log_format.py); the fields travel as the
record's `call` attribute.
"""

import logging

from .metering import CallOutcome

logger = logging.getLogger("routerweb.calls")


def call_log_fields(outcome: CallOutcome, *, key_prefix: str, tries: int, with_content: bool) -> dict:
    fields = {
        "request_id": outcome.request_id,
        "user_id": outcome.user_id,
        "key_prefix": key_prefix,
        "source": outcome.source,
        "kind": outcome.kind,
        "requested_model": outcome.requested,
        "model": outcome.model.name if outcome.model is not None else None,
        "attempts": tries,
        "status": outcome.status,
        "http_status": outcome.http_status,
        "error_code": outcome.error_code,
        "stream": outcome.stream,
        "latency_ms": outcome.latency_ms,
        "overhead_ms": round(outcome.overhead_ms, 2),
        "cost_usd": outcome.cost_usd,
        "client_disconnected": outcome.client_disconnected,
    }
    if with_content:
        fields["messages"] = outcome.messages
        fields["completion_chars"] = outcome.completion_chars
    return fields


def call_logged(outcome: CallOutcome, *, key_prefix: str, tries: int, with_content: bool) -> None:
    """Log the call's line (a cheap no-op when INFO is off for `routerweb.calls`); never raises."""
    if not logger.isEnabledFor(logging.INFO):
        return
    try:
        fields = call_log_fields(outcome, key_prefix=key_prefix, tries=tries, with_content=with_content)
        text = " ".join(f"{name}={value}" for name, value in fields.items() if name != "messages")
        logger.info("call %s", text, extra={"call": fields})
    except Exception:
        logging.getLogger("routerweb.gateway").exception("call log line for %s failed", outcome.request_id)
