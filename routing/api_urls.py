"""URLs of the API (/v1/: OpenAI's chat completions, embeddings and models, Anthropic's Messages API), served by
routing.asgi_api without Django's page middleware."""

from django.urls import path

from .views import api

urlpatterns = [
    path("v1/chat/completions", api.chat_completions, name="api-chat-completions"),
    path("v1/messages", api.messages, name="api-messages"),
    path("v1/messages/count_tokens", api.messages_count_tokens, name="api-messages-count-tokens"),
    path("v1/embeddings", api.embeddings, name="api-embeddings"),
    path("v1/models", api.models_list, name="api-models"),
    path("v1/models/<path:model_id>", api.model_retrieve, name="api-model"),
]
