"""Repeated failed logins are throttled per (username, address), on the admin's login and the site's."""

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import user_create

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at:UserWarning")]


@pytest.mark.parametrize("login_url", ["admin:login", "login"])
def test_the_sixth_failure_is_refused_with_a_clear_message_even_with_the_right_password(login_url, settings):
    settings.ROUTERWEB_LOGIN_FAILURES = 5
    user_create("root", password="right-password-1234", is_staff=True, is_superuser=True)
    client, url = Client(), reverse(login_url)
    for _ in range(5):
        response = client.post(url, {"username": "root", "password": "wrong"})
        assert response.status_code == 200 and "Too many failed logins" not in response.content.decode()
    response = client.post(url, {"username": "root", "password": "right-password-1234"})
    assert response.status_code == 200
    assert "Too many failed logins for this username from your address. Try again in 15 minutes." in (
        response.content.decode()
    )
    assert "_auth_user_id" not in client.session
    # Another address is not locked out by this one's failures.
    elsewhere = Client(REMOTE_ADDR="10.0.0.9")
    assert elsewhere.post(url, {"username": "root", "password": "right-password-1234"}).status_code == 302


def test_successful_logins_do_not_count(settings):
    settings.ROUTERWEB_LOGIN_FAILURES = 2
    user_create("alice", password="right-password-1234")
    client = Client()
    for _ in range(3):
        assert (
            client.post(reverse("login"), {"username": "alice", "password": "right-password-1234"}).status_code == 302
        )
        client.logout()
