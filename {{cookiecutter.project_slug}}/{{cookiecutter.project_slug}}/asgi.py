{%- set proxy_middleware = cookiecutter.server != "uvicorn" -%}
"""
ASGI entry point: `application` is the object every ASGI server loads (Procfile names it).

The server calls it once per connection, with a scope (the kind of connection, its path,
headers and client) and two functions, `receive` and `send`, that exchange messages with the
client. A WSGI call returns one response; an ASGI call lasts as long as its connection, which
is what makes WebSockets possible. urls.py still routes HTTP requests: this file decides where
each kind of connection goes.

https://docs.djangoproject.com/en/stable/howto/deployment/asgi/
{%- if cookiecutter.websockets %}
https://channels.readthedocs.io/en/stable/topics/routing.html
{%- endif %}
"""

import os
{% if cookiecutter.websockets or proxy_middleware %}
{%- if cookiecutter.websockets %}
from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
{%- endif %}
{%- if proxy_middleware %}
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
{%- endif %}
{% endif %}
from .checks import run_checks_at_start_up
from .handler import get_asgi_application
from .lifespan import lifespan
{%- if cookiecutter.websockets %}
from .limits import WebSocketLimits
from .origins import SameOriginValidator
{%- endif %}

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.settings")
{%- if cookiecutter.websockets %}
# Django's ASGI handler, whose request threads are reused (handler.py). Set Django up
# (settings, app registry) before importing the WebSocket routes: their consumers import models.
django_application = get_asgi_application()

from .routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        # Only pages of this site may connect, as for forms (origins.py); the session's user
        # goes into scope["user"]; each connection's messages are limited in size and rate
        # (limits.py); then the path picks a consumer, as urls.py picks a view.
        "websocket": SameOriginValidator(
            AuthMiddlewareStack(WebSocketLimits(URLRouter(websocket_urlpatterns)))
        ),
        # The server's start-up and shutdown messages (see lifespan.py).
        "lifespan": lifespan,
    }
)
{%- else %}
# Django's ASGI handler, whose request threads are reused (handler.py).
django_application = get_asgi_application()


async def application(scope, receive, send):
    """Django serves HTTP; lifespan.py answers start-up and shutdown; no WebSockets here."""
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
    elif scope["type"] == "websocket":
        # Closing before accepting refuses the handshake with HTTP 403, where Django would
        # raise "Django can only handle ASGI/HTTP connections".
        await receive()
        await send({"type": "websocket.close"})
    else:
        await django_application(scope, receive, send)
{%- endif %}
{%- if proxy_middleware %}


# X-Forwarded-For and X-Forwarded-Proto are believed only from the proxies listed in
# FORWARDED_ALLOW_IPS. {{ cookiecutter.server }} has no such allow-list; uvicorn's middleware has.
application = ProxyHeadersMiddleware(
    application, trusted_hosts=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
)
{%- endif %}


# Like `runserver`, refuse to start on a misconfiguration (see checks.py). The checks import
# urls.py too, so a broken view stops start-up instead of failing a request.
run_checks_at_start_up()
