"""Small things pages get right: a styled 403, the admin's icon."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at:UserWarning")]


def test_a_forbidden_page_is_styled_and_says_why():
    client = Client()
    staff = get_user_model().objects.create_user("sam", password="pw-sam-12345", is_staff=True)
    client.force_login(staff)

    response = client.get(reverse("admin:billing_call_changelist"))

    assert response.status_code == 403
    page = response.content.decode()
    assert "You may not see this page" in page
    assert 'class="topbar"' in page and "app." in page and '<link rel="stylesheet"' in page


def test_the_admin_names_its_icon(admin_client):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert 'rel="icon"' in page and "favicon" in page
