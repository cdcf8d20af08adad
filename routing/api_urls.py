"""URLs of the OpenAI-compatible API (/v1/), served by routing.asgi_api without Django's page middleware."""

from django.urls import path

from .views import api

urlpatterns = [
    path("v1/chat/completions", api.chat_completions, name="api-chat-completions"),
    path("v1/embeddings", api.embeddings, name="api-embeddings"),
    path("v1/models", api.models_list, name="api-models"),
    path("v1/models/<path:model_id>", api.model_retrieve, name="api-model"),
]
