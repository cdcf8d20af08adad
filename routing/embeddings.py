"""/v1/embeddings: OpenAI's embeddings API on the gateway's shared call path.

`embeddings_run` is `gateway.call_run` with the `EMBEDDINGS` endpoint: models of kind embeddings only
(`router.candidates_for` refuses a chat model with a 400), the same circuit breakers, rate limits,
budgets, fallback and call rows (kind "embeddings", input tokens only) as /v1/chat/completions. A
candidate is tried through its adapter's embeddings endpoint (`router.embeddings_attempt`; a
candidate whose API format cannot embed is skipped). The response cache does not apply.
"""

from functools import partial

from .call_context import CallContext, GatewayResponse
from .embedding_request import EmbeddingRequest, embedding_request_parse
from .gateway import Caller, Endpoint, call_run, openai_error_answer
from .router import CandidateTry, UsageCost, embeddings_attempt
from .runtime import Runtime


def _embeddings_attempt(request: EmbeddingRequest, context: CallContext, usage_cost: UsageCost) -> CandidateTry:
    return partial(embeddings_attempt, request=request.body, usage_cost=usage_cost)


EMBEDDINGS = Endpoint(
    parse=embedding_request_parse,
    attempt=_embeddings_attempt,
    error_answer=openai_error_answer,
    kind="embeddings",
    cacheable=False,
)


async def embeddings_run(*, runtime: Runtime, raw_body: bytes, caller: Caller) -> GatewayResponse:
    """Route one embeddings request for whoever `caller(registry)` says is calling (see `call_run`)."""
    return await call_run(EMBEDDINGS, runtime=runtime, raw_body=raw_body, caller=caller)
