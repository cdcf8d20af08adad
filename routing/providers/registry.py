"""API formats by name: `adapter_for(provider.api_format)` is the adapter the router uses.

The built-in formats are listed in `BUILT_IN`; an operator adds others with the setting
`ROUTERWEB_PROVIDER_ADAPTERS` (dotted paths to `ProviderAdapter` subclasses), read once.
"""

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from .anthropic import AnthropicAdapter
from .base import ProviderAdapter
from .openai_compat import OpenAICompatAdapter

BUILT_IN: tuple[type[ProviderAdapter], ...] = (OpenAICompatAdapter, AnthropicAdapter)
DEFAULT_API_FORMAT = OpenAICompatAdapter.api_format


@cache
def adapters() -> dict[str, ProviderAdapter]:
    """One instance per API format, built-in ones first."""
    classes = [*BUILT_IN, *(import_string(path) for path in settings.ROUTERWEB_PROVIDER_ADAPTERS)]
    return {cls.api_format: cls() for cls in classes}


def adapter_for(api_format: str) -> ProviderAdapter:
    """The adapter of `api_format`; KeyError for a format no adapter serves."""
    return adapters()[api_format]


def api_format_choices() -> list[tuple[str, str]]:
    return [(name, adapter.label) for name, adapter in adapters().items()]
