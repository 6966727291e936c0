import pytest
{%- if cookiecutter.channel_layer == "redis" %}
from channels.layers import InMemoryChannelLayer
{%- endif %}

from asgi_runtime import health

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


def test_readyz_says_when_static_files_were_not_collected(client, settings, tmp_path):
    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"},
    }

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["static files"] == "down"


def test_readyz_names_what_is_down_and_logs_why(client, monkeypatch, caplog):
    async def unreachable():
        raise ConnectionRefusedError("Connection refused")

    monkeypatch.setattr(health, "CHECKS", {"database": health.check_database, "cache": unreachable})

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "cache": "down"},
    }
    # One warning with the reason; not Django's "Service Unavailable" error as well.
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("WARNING", "Not ready: cache: ConnectionRefusedError: Connection refused")
    ]
{%- if cookiecutter.channel_layer == "redis" %}


class LayerThatLosesMessages(InMemoryChannelLayer):
    """What a channel layer whose receive loop died looks like: sends succeed, nothing arrives."""

    async def send(self, channel, message):
        pass


@pytest.fixture
def redis_settings(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return settings


async def test_redis_is_ok_when_a_message_makes_the_round_trip(redis_settings):
    assert await health.problem_with(health.check_redis) is None


async def test_redis_is_down_when_messages_do_not_come_back(redis_settings, monkeypatch):
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 0.5)
    redis_settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": f"{__name__}.{LayerThatLosesMessages.__name__}"}
    }

    assert await health.problem_with(health.check_redis) == "no answer within 0.5 s"


async def test_redis_is_reported_down_when_unreachable(redis_settings):
    # Nothing listens on port 1: the check fails fast instead of hanging.
    redis_settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }

    assert (await health.problem_with(health.check_redis)).startswith("ConnectionError")
{%- endif %}
