"""One call as its page shows it: the row, its badges, its tokens by class, and its stored body.

`call_for_viewer` applies the dashboard's access rule: a viewer sees their own calls, and the spend
permission sees all. A call that does not exist and one the viewer may not see are the same "none",
so a page never tells whether some request id exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from ..body_models import CallBody
from ..call_bodies import call_body_for
from ..models import Call
from ..rollups import answered_by_fallback
from .access import viewer_sees_everyone

REQUEST_ID_MAX = Call._meta.get_field("request_id").max_length


def call_for_viewer(*, viewer: AbstractBaseUser, request_id: str) -> Call | None:
    """The call `request_id` if `viewer` may see it, else None (whether it exists or not)."""
    if not request_id or len(request_id) > REQUEST_ID_MAX:
        return None
    calls = Call.objects.select_related("user", "api_key", "model", "provider").filter(request_id=request_id)
    if not viewer_sees_everyone(viewer):
        calls = calls.filter(user_id=viewer.pk)
    return calls.first()


def call_badges(call: Call) -> list[tuple[str, str]]:
    """The status badges of a call, as (name, label): its status, then fallback, disconnected,
    estimated and unpriced when they apply."""
    names = [call.status]
    if answered_by_fallback(call.attempts):
        names.append("fallback")
    if call.client_disconnected:
        names.append("disconnected")
    if call.usage_estimated:
        names.append("estimated")
    if call.unpriced:
        names.append("unpriced")
    return [(name, name.replace("_", " ")) for name in names]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a stored conversation, as text to render as Markdown."""

    role: str
    text: str
    tool_calls: str = ""  # the message's tool calls as indented JSON, if any
    name: str = ""


@dataclass(frozen=True, slots=True)
class CallConversation:
    messages: list[ChatMessage]
    answer: ChatMessage | None
    parameters: str  # indented JSON
    request_truncated: bool
    answer_truncated: bool


def call_conversation(call: Call) -> CallConversation | None:
    """The call's stored body as a chat (None when no body was stored)."""
    body = call_body_for(call.request_id)
    if body is None:
        return None
    return _conversation(body)


def _conversation(body: CallBody) -> CallConversation:
    messages = [_message(message) for message in body.messages]
    answer = None
    if body.answer or body.tool_calls:
        answer = ChatMessage("assistant", body.answer, _json_text(body.tool_calls) if body.tool_calls else "")
    return CallConversation(
        messages=messages,
        answer=answer,
        parameters=_json_text(body.parameters),
        request_truncated=body.request_truncated,
        answer_truncated=body.answer_truncated,
    )


def _message(message: Any) -> ChatMessage:
    """A stored message (any shape a client sent) as text: a string content as it is, the text parts
    of a list content joined, other parts named (an image is shown as "[image_url]")."""
    if not isinstance(message, dict):
        return ChatMessage("?", _json_text(message))
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                parts.append(f"[{part.get('type', 'part') if isinstance(part, dict) else 'part'}]")
        text = "\n\n".join(parts)
    else:
        text = content if isinstance(content, str) else ("" if content is None else _json_text(content))
    tool_calls = message.get("tool_calls")
    name = message.get("name") or message.get("tool_call_id") or ""
    return ChatMessage(
        role=str(message.get("role") or "?"),
        text=text,
        tool_calls=_json_text(tool_calls) if tool_calls else "",
        name=name if isinstance(name, str) else "",
    )


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
