"""Reading stored call bodies: one call's body, and the request ids whose body mentions some text.

The writing side is billing/call_body_build.py (what is stored) and the row writer (when).
"""

from django.db import connection
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from .body_models import CallBody

# The indexed expression of migration 0010 (call_body_text_idx): a search must use exactly this one.
BODY_TEXT_SQL = "(jsonb_to_tsvector('simple', request, '[\"string\"]') || to_tsvector('simple', answer))"


def call_body_for(request_id: str) -> CallBody | None:
    """The stored body of the call `request_id`, or None (storage was off for it, or it was deleted)."""
    return CallBody.objects.filter(request_id=request_id).first()


def call_bodies_matching(text: str, *, bodies: QuerySet | None = None) -> QuerySet:
    """The request ids of stored bodies (all, or those of `bodies`) that contain `text`: PostgreSQL's
    full-text search (every word, any order, through the GIN index), a plain case-insensitive contains
    elsewhere."""
    bodies = CallBody.objects.all() if bodies is None else bodies
    if connection.vendor == "postgresql":
        matches = RawSQL(f"{BODY_TEXT_SQL} @@ plainto_tsquery('simple', %s)", [text], output_field=BooleanField())
        bodies = bodies.filter(matches)
    else:
        bodies = bodies.filter(answer__icontains=text) | bodies.filter(request__icontains=text)
    return bodies.values("request_id")
