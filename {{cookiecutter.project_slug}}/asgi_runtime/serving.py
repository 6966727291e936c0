{%- set proxy_middleware = cookiecutter.server != "uvicorn" -%}
"""
What every server needs around the project's ASGI application (asgi.py calls these).

- `serve(application)`: answers the server's start-up and shutdown messages (lifespan.py),
{%- if proxy_middleware %}
  believes X-Forwarded-For and X-Forwarded-Proto only from FORWARDED_ALLOW_IPS (the server
  has no such allow-list; uvicorn's middleware has),
{%- endif %}
  and runs Django's system checks first, as `runserver` does: a misconfiguration stops
  start-up with one line instead of failing requests (checks.py).
{%- if cookiecutter.websockets %}
- `protect(router)`: what every WebSocket connection goes through before its route: only pages
  of this site may connect, as for forms (origins.py); the session's user goes into
  scope["user"]; each connection's messages are limited in size and rate (limits.py).
{%- endif %}
"""
{%- if cookiecutter.websockets and proxy_middleware %}

import os

from channels.auth import AuthMiddlewareStack
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
{%- elif cookiecutter.websockets %}

from channels.auth import AuthMiddlewareStack
{%- elif proxy_middleware %}

import os

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
{%- endif %}

from .checks import run_checks_at_start_up
from .lifespan import lifespan
{%- if cookiecutter.websockets %}
from .limits import WebSocketLimits
from .origins import SameOriginValidator
{%- endif %}


def serve(application):
    async def served(scope, receive, send):
        if scope["type"] == "lifespan":
            await lifespan(scope, receive, send)
        else:
            await application(scope, receive, send)

{%- if proxy_middleware %}

    served = ProxyHeadersMiddleware(
        served, trusted_hosts=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
    )
{%- endif %}

    # The checks import urls.py too, so a broken view stops start-up instead of failing a request.
    run_checks_at_start_up()
    return served
{%- if cookiecutter.websockets %}


def protect(router):
    return SameOriginValidator(AuthMiddlewareStack(WebSocketLimits(router)))
{%- endif %}
