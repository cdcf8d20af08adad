"""The dashboard's filter form: a date range (a preset or two dates) and optional model, route, user, key
and kind of call (chat or embeddings).

Ranges are whole days of the `tz` time zone (an IANA name, default the ROUTERWEB_DASHBOARD_TZ setting),
today included: `7d` is today and the six days before it. Bad input is a field error (shown next to
the field on the page, a 400 on the JSON and CSV endpoints), never a 500.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from routing.models import ApiKey, ModelEndpoint, Route

from .dashboard.access import viewer_sees_everyone
from .dashboard.recent import CallCursor
from .services import price_current

RANGE_PRESETS = {"today": "Today", "7d": "Last 7 days", "30d": "Last 30 days", "month": "This month"}
RANGE_CHOICES = [*RANGE_PRESETS.items(), ("custom", "Custom")]
DEFAULT_RANGE = "30d"
MAX_DAYS = 366
EARLIEST = date(2000, 1, 1)
LATEST = date(2100, 12, 31)


def time_zone_choices() -> list[str]:
    """The IANA zone names the form takes (offered in a list to search)."""
    return sorted(available_timezones())


class DashboardFilterForm(forms.Form):
    range = forms.ChoiceField(choices=RANGE_CHOICES, required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    model = forms.ModelChoiceField(ModelEndpoint.objects.all(), to_field_name="name", required=False)
    route = forms.ModelChoiceField(Route.objects.all(), to_field_name="name", required=False)
    user = forms.ModelChoiceField(
        get_user_model().objects.all(), to_field_name=get_user_model().USERNAME_FIELD, required=False
    )
    key = forms.ModelChoiceField(ApiKey.objects.all(), required=False)
    kind = forms.ChoiceField(choices=[("", "Chat and embeddings"), *ModelEndpoint.Kind.choices], required=False)
    tz = forms.CharField(required=False, max_length=64)
    before = forms.CharField(required=False, max_length=200)

    def __init__(self, *args, viewer: AbstractBaseUser, **kwargs) -> None:
        """`viewer` sees only the users and keys they may filter on: one they may not see is answered
        exactly like one that does not exist, so the answer never tells whether an account exists."""
        super().__init__(*args, **kwargs)
        if not viewer_sees_everyone(viewer):
            self.fields["user"].queryset = get_user_model().objects.filter(pk=viewer.pk)
            self.fields["key"].queryset = ApiKey.objects.filter(user_id=viewer.pk)

    def clean_tz(self) -> str:
        name = self.cleaned_data.get("tz") or settings.ROUTERWEB_DASHBOARD_TZ
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise forms.ValidationError("Pick a time zone by its IANA name, such as Europe/Paris.") from None
        return name

    def clean_before(self) -> CallCursor | None:
        value = self.cleaned_data.get("before")
        if not value:
            return None
        try:
            return CallCursor.decode(value)
        except ValueError:
            raise forms.ValidationError("This page link is not valid; start again from the newest calls.") from None

    def clean(self) -> dict:
        data = super().clean()
        preset = data.get("range") or DEFAULT_RANGE
        data["range"] = preset
        if "tz" in self.errors:
            return data
        zone = ZoneInfo(data["tz"])
        today = timezone.now().astimezone(zone).date()
        if preset == "custom":
            first, last = data.get("start"), data.get("end")
            if first is None and "start" not in self.errors:
                self.add_error("start", "Pick the first day of the range.")
            if last is None and "end" not in self.errors:
                self.add_error("end", "Pick the last day of the range.")
            if first is None or last is None:
                return data
            if not (EARLIEST <= first <= LATEST):
                self.add_error("start", f"Pick a day between {EARLIEST} and {LATEST}.")
                return data
            if not (EARLIEST <= last <= LATEST):
                self.add_error("end", f"Pick a day between {EARLIEST} and {LATEST}.")
                return data
            if last < first:
                self.add_error("end", "The last day must not be before the first.")
                return data
            if (last - first).days + 1 > MAX_DAYS:
                self.add_error("end", f"Pick at most {MAX_DAYS} days.")
                return data
        elif preset == "today":
            first, last = today, today
        elif preset == "7d":
            first, last = today - timedelta(days=6), today
        elif preset == "month":
            first, last = today.replace(day=1), today
        else:
            first, last = today - timedelta(days=29), today
        start = datetime.combine(first, time.min, tzinfo=zone).astimezone(UTC)
        end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)
        if any(bound.minute or bound.second for bound in (start, end)):
            # The rollups are whole UTC hours: a day that starts at :30 or :45 cannot be summed exactly.
            self.add_error(
                "tz", f"{data['tz']} is not a whole number of hours from UTC on these days; pick another zone."
            )
            return data
        data["start_at"], data["end_at"] = start, end
        data["first_day"], data["last_day"] = first, last
        return data


class WhatIfForm(forms.Form):
    """The what-if question's model: one with a price in force now (`cleaned_data["price"]`)."""

    whatif = forms.ModelChoiceField(
        ModelEndpoint.objects.all(),
        to_field_name="name",
        error_messages={"required": "Pick the model to re-price the calls at.", "invalid_choice": "No such model."},
    )

    def clean(self) -> dict:
        data = super().clean()
        model = data.get("whatif")
        if model is not None:
            data["price"] = price_current(model=model)
            if data["price"] is None:
                self.add_error("whatif", f"{model.name} has no price: set one to re-price calls at it.")
        return data


STATUS_CHOICES = [("", "Any status"), ("ok", "ok"), ("error", "error"), ("rejected", "rejected")]
STATUS_CHOICES += [("cache_hit", "cache hit"), ("fallback", "fallback")]
ESTIMATED_CHOICES = [("", "Any usage"), ("yes", "estimated"), ("no", "reported by the provider")]
SEARCH_MAX = 200


class CallListFilterForm(DashboardFilterForm):
    """The dashboard's filters, plus the call list's: status, estimated usage and a search (a request id,
    or text in stored bodies)."""

    status = forms.ChoiceField(choices=STATUS_CHOICES, required=False)
    estimated = forms.ChoiceField(choices=ESTIMATED_CHOICES, required=False)
    q = forms.CharField(required=False, max_length=SEARCH_MAX, strip=True)

    def clean_estimated(self) -> bool | None:
        return {"yes": True, "no": False}.get(self.cleaned_data.get("estimated") or "")
