"""origins.py: WebSocket handshakes are accepted from this site's own pages only."""

import pytest

from asgi_runtime.origins import same_origin


def handshake(origin, host="example.com:8000", scheme="ws"):
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "scheme": scheme, "path": "/ws/", "headers": headers}


@pytest.fixture(autouse=True)
def site(settings):
    settings.ALLOWED_HOSTS = ["example.com"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.net", "https://*.example.org"]


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://example.com:8000", "example.com:8000", "ws"),
        ("https://example.com", "example.com", "wss"),
        ("https://app.example.net", "example.com", "wss"),
        ("https://chat.example.org", "example.com", "wss"),
    ],
    ids=["same-origin", "same-origin-behind-tls", "trusted", "trusted-wildcard"],
)
def test_pages_of_the_site_and_trusted_origins_may_connect(origin, host, scheme):
    assert same_origin(handshake(origin, host, scheme))


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://example.com:9000", "example.com:8000", "ws"),
        ("http://example.com", "example.com", "wss"),
        ("https://evil.example", "example.com", "wss"),
        (None, "example.com", "wss"),
        ("http://evil.example:8000", "evil.example:8000", "ws"),
        ("https://app.example.net", "evil.example", "wss"),
    ],
    ids=[
        "other-port",
        "plain-http-page",
        "other-site",
        "no-origin",
        "host-not-allowed",
        "trusted-origin-foreign-host",
    ],
)
def test_other_pages_may_not(origin, host, scheme):
    assert not same_origin(handshake(origin, host, scheme))
