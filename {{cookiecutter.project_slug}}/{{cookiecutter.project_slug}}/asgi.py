"""
ASGI entry point: `application` is the one object every ASGI server loads.

The server imports it by its dotted path (see Procfile) and calls it once per connection
with a scope (what kind of connection, path, headers, client) and two channels to receive
and send messages. Unlike WSGI's one call per request, an ASGI call can stay open: that is
what makes WebSockets possible. urls.py still routes HTTP; this file decides which kind of
connection goes where.

https://docs.djangoproject.com/en/stable/howto/deployment/asgi/
{%- if cookiecutter.websockets %}
https://channels.readthedocs.io/en/stable/topics/routing.html
{%- endif %}
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.settings")

# Build Django's HTTP application first: this runs django.setup(), which loads the settings
# and the app registry. Whatever imports models must come after this line, or it raises
# AppRegistryNotReady: {% if cookiecutter.websockets %}the auth middleware, the consumers, {% endif %}the views.
django_application = get_asgi_application()

{% if cookiecutter.websockets -%}
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
{% endif -%}
{% if cookiecutter.server != "uvicorn" -%}
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware  # noqa: E402
{% endif -%}
{% if cookiecutter.websockets %}
from rooms.routing import websocket_urlpatterns  # noqa: E402
{% endif %}
# Import urls.py (and so the views) now rather than on the first request: a broken import
# fails start-up instead of a user's request, and auto-reloaders watch the view modules.
from . import urls  # noqa: E402, F401
from .lifespan import lifespan  # noqa: E402
{%- if cookiecutter.websockets %}

# One route per kind of connection (the scope's "type").
application = ProtocolTypeRouter(
    {
        # HTTP: Django's views, as under WSGI.
        "http": django_application,
        # WebSockets: refuse pages from other sites (the Origin header must match
        # ALLOWED_HOSTS), put the session's user in scope["user"], then route by path, as
        # urls.py does for HTTP.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
        # Server start-up and shutdown.
        "lifespan": lifespan,
    }
)
{%- else %}


async def application(scope, receive, send):
    """Route each connection by its scope's "type": Django serves HTTP only."""
    if scope["type"] == "http":
        await django_application(scope, receive, send)
    elif scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
    else:
        # This project has no WebSocket routes. Closing before accepting refuses the
        # handshake (HTTP 403) where Django would raise "can only handle ASGI/HTTP".
        await receive()
        await send({"type": "websocket.close"})
{%- endif %}
{%- if cookiecutter.server != "uvicorn" %}
{% if not cookiecutter.websockets %}
{% endif %}
# Proxy headers (X-Forwarded-For, X-Forwarded-Proto) are believed only from the addresses in
# FORWARDED_ALLOW_IPS (your proxy's; default 127.0.0.1). {{ cookiecutter.server }} has no such
# allow-list, so the project borrows uvicorn's middleware, which does.
application = ProxyHeadersMiddleware(
    application, trusted_hosts=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
)
{%- endif %}
