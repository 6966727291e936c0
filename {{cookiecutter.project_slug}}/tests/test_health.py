import pytest

from {{ cookiecutter.project_slug }} import health

pytestmark = pytest.mark.django_db


def test_healthz_answers_whatever_the_host(client):
    # Probes come with a pod IP or a load balancer's name as the Host: not in ALLOWED_HOSTS.
    response = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_the_database(client, monkeypatch):
    monkeypatch.setattr(health, "CHECKS", {"database": health.check_database})

    response = client.get("/readyz", HTTP_HOST="10.0.0.7:8000")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


def test_readyz_names_what_is_down(client, monkeypatch):
    async def unreachable():
        raise ConnectionRefusedError

    monkeypatch.setattr(health, "CHECKS", {"database": health.check_database, "cache": unreachable})

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "cache": "down"},
    }
{%- if cookiecutter.websockets and cookiecutter.channel_layer == "redis" %}


async def test_redis_is_reported_down_when_unreachable(settings):
    # Nothing listens on port 1: the check fails fast instead of hanging.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    assert await health._status(health.check_redis) == "down"
{%- endif %}
