"""
WebSocket handshakes from this site's own pages only, by the rule Django's CSRF protection
applies to forms.

A browser sends the page's origin (scheme, host and port) with every WebSocket handshake and,
whatever the origin, the site's cookies. Channels' AllowedHostsOriginValidator compares only
the origin's host name with ALLOWED_HOSTS, so a page served over plain HTTP, or on another
port, of an allowed host could open a socket as the signed-in user. Here the handshake's Host
must be allowed, and its Origin must be the site's own as the request reaches Django (scheme,
host and port; the scheme believed only from trusted proxies) or one of CSRF_TRUSTED_ORIGINS:
Django's own check decides, on a request built from the handshake by Django's own code.
"""

import io
import logging

from channels.security.websocket import WebsocketDenier
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.middleware.csrf import CsrfViewMiddleware

logger = logging.getLogger(__name__)


def same_origin(scope):
    """Whether a WebSocket handshake comes from a page Django would accept a form from."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    request = ASGIRequest({**scope, "method": "GET", "scheme": scheme}, io.BytesIO())
    try:
        request.get_host()
    except DisallowedHost:
        return False
    if "HTTP_ORIGIN" not in request.META:
        return False
    # (The ignore: Django's origin check is private, and this get_response is never called.)
    return CsrfViewMiddleware(lambda request: None)._origin_verified(request)  # type: ignore[arg-type, attr-defined]


class SameOriginValidator:
    """ASGI middleware: refuses (HTTP 403) WebSocket handshakes from other origins."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not same_origin(scope):
            # As Django logs a refused form: one warning line, saying what came.
            origin = dict(scope["headers"]).get(b"origin", b"(none)").decode("latin-1")
            logger.warning("WebSocket Forbidden (origin %s): %s", origin, scope["path"])
            return await WebsocketDenier.as_asgi()(scope, receive, send)
        return await self.application(scope, receive, send)
