"""The seam between the router and an upstream's API format.

routerweb speaks OpenAI's chat completions to its clients; an upstream may speak something else.
For every candidate the router asks the provider's adapter for the upstream request (URL, headers,
body) and hands it back whatever came of it (a JSON answer, a stream, an error status), which the
adapter turns into OpenAI's shape plus the call's usage. The router, the gateway and billing never
see a provider's wire format.

Embeddings (/v1/embeddings) go through the same seam: an adapter whose format has an embeddings
endpoint sets `embeds` and gives its URL, body and answer; the router skips a candidate whose
adapter cannot embed, with that reason in the trace.

Adding an API format is one module with a `ProviderAdapter` subclass, registered by name in
`routing/providers/registry.py` (or by an operator through the `ROUTERWEB_PROVIDER_ADAPTERS`
setting); a `Provider` row names its format in `api_format`.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import orjson

from ..snapshot import ModelSnap, ProviderSnap
from ..streaming import StreamRelay
from ..upstream import RETRYABLE_4XX, UpstreamFailure, retry_after_s
from ..usage import Usage, UsageProblem

JSON_HEADERS = [(b"content-type", b"application/json"), (b"accept-encoding", b"identity")]
SSE_HEADERS = [*JSON_HEADERS, (b"accept", b"text/event-stream")]


@dataclass(frozen=True, slots=True)
class Answer:
    """A non-streamed answer: `body` is an OpenAI chat completion (or embeddings list) for the client.
    `usage_end`: for an answer not parsed whole (embeddings), the offset of the usage object's closing
    brace, where its cost is spliced in."""

    body: bytes
    usage: Usage | UsageProblem
    usage_end: int | None = None


def answer_object(raw: bytes, *, list_field: str, what: str) -> dict[str, Any]:
    """An upstream's JSON answer: an object whose `list_field` is a list, else a retryable failure
    ("upstream answer is not `what`")."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamFailure("invalid JSON from upstream", retryable=True) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get(list_field), list):
        raise UpstreamFailure(f"upstream answer is not {what}", retryable=True)
    return parsed


class ProviderAdapter(ABC):
    """How to talk to one API format. Adapters hold no per-call state: one instance serves every call.

    Every method gets untrusted upstream input and must raise nothing but `UpstreamFailure` for it.
    """

    api_format: ClassVar[str]  # the value of `Provider.api_format` that selects this adapter
    label: ClassVar[str]  # what the admin shows
    embeds: ClassVar[bool] = False  # the format has an embeddings endpoint (the three embeddings_* methods)

    @abstractmethod
    def url(self, base_url: str) -> str:
        """The chat endpoint of a provider whose API root is `base_url` (no trailing slash)."""

    @abstractmethod
    def headers(self, api_key: str | None, *, stream: bool) -> list[tuple[bytes, bytes]]:
        """The request headers, the key included when there is one (never logged, never in an error)."""

    @abstractmethod
    def request_body(self, request: dict[str, Any], model: ModelSnap) -> bytes:
        """The client's checked OpenAI request, for candidate `model`, in the upstream's format.
        Streams always ask for usage: the call's cost depends on it."""

    @abstractmethod
    def answer(self, raw: bytes) -> Answer:
        """A 2xx non-streamed body as an OpenAI chat completion and its usage; raises a retryable
        UpstreamFailure when it is not an answer (another candidate may do better)."""

    @abstractmethod
    def stream_relay(
        self, response: httpx.Response, provider: ProviderSnap, *, client_wants_usage: bool
    ) -> StreamRelay:
        """A relay that turns the upstream's event stream into OpenAI chat completion chunks."""

    @abstractmethod
    def error_fields(self, raw: bytes, status: int) -> dict[str, str | None]:
        """OpenAI's error fields (message, type, param, code) from an error body, as bounded strings."""

    def embeddings_url(self, base_url: str) -> str:
        """The embeddings endpoint of a provider whose API root is `base_url` (adapters that `embeds`)."""
        raise NotImplementedError(f"the {self.api_format} API format cannot embed")

    def embeddings_body(self, request: dict[str, Any], model: ModelSnap) -> bytes:
        """The client's checked OpenAI embeddings request, for candidate `model`, in the upstream's format."""
        raise NotImplementedError(f"the {self.api_format} API format cannot embed")

    def embeddings_answer(self, raw: bytes) -> Answer:
        """A 2xx body as an OpenAI embeddings list and its usage (input tokens only), parsing no more of
        the vectors than needed; raises a retryable UpstreamFailure when it is not an answer."""
        raise NotImplementedError(f"the {self.api_format} API format cannot embed")

    def endpoint_url(self, base_url: str, kind: str) -> str:
        """The URL for a call of `kind` ("chat" or "embeddings")."""
        return self.embeddings_url(base_url) if kind == "embeddings" else self.url(base_url)

    def failure(self, status: int, raw: bytes, headers: httpx.Headers) -> UpstreamFailure:
        """What a non-2xx answer means for fallback. Connection-level trouble, 408/409/425/429, 5xx and
        401/403 (a bad key: the provider's circuit opens) move on to the next candidate; other 4xx mean
        the request itself is wrong and are returned to the client with the upstream's error."""
        if status < 400:  # a redirect: the provider's address is wrong or moved, which another's may not be
            return UpstreamFailure(f"{status} from upstream (redirect)", retryable=True, status=status)
        if status in RETRYABLE_4XX or status >= 500:
            return UpstreamFailure(
                f"{status} from upstream",
                retryable=True,
                status=status,
                retry_after_s=retry_after_s(headers.get("retry-after")) if status == 429 else None,
                key_rejected=status in (401, 403),
            )
        return UpstreamFailure(
            f"{status} from upstream", retryable=False, status=status, error=self.error_fields(raw, status)
        )
