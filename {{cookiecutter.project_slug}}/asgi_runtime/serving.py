{%- set proxy_middleware = cookiecutter.server != "uvicorn" -%}
"""
What every server needs around the project's ASGI application (asgi.py calls these).

- `serve(application)`: answers the server's start-up and shutdown messages (lifespan.py),
{%- if proxy_middleware %}
  believes X-Forwarded-For and X-Forwarded-Proto only from FORWARDED_ALLOW_IPS (the server
  has no such allow-list; uvicorn's middleware has),
{%- endif %}
{%- if cookiecutter.server == "daphne" %}
  flushes daphne's access log line by line,
{%- endif %}
  and runs Django's system checks first, as `runserver` does: a misconfiguration stops
  start-up with one line instead of failing requests (checks.py). A worker process started by
  the server's supervisor stops when the supervisor dies, even by kill -9, so that a restarted
  server never shares its port with workers running the previous code.
{%- if cookiecutter.websockets %}
- `protect(router)`: what every WebSocket connection goes through before its route: only pages
  of this site may connect, as for forms (origins.py); the session's user goes into
  scope["user"]; each connection's messages are limited in size and rate (limits.py); with
  SENTRY_DSN, what a consumer raises is reported to Sentry.
{%- endif %}
"""

import ctypes
import multiprocessing
import os
import signal
import sys
{%- if cookiecutter.websockets or proxy_middleware %}
{% endif %}
{%- if cookiecutter.websockets %}
from channels.auth import AuthMiddlewareStack
from django.conf import settings
{%- endif %}
{%- if proxy_middleware %}
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

{%- if cookiecutter.server == "daphne" %}

    # daphne writes its access log to stdout and never flushes it: line by line instead, so that
    # each line arrives when its request ends, not kilobytes later.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # A TextIOWrapper.
{%- endif %}

    # The checks import urls.py too, so a broken view stops start-up instead of failing a request.
    run_checks_at_start_up()
    stop_with_supervisor()
    return served


def stop_with_supervisor():
    """In a worker process (uvicorn's and granian's workers are multiprocessing children), ask
    Linux to kill it when the supervisor process ends. Killed, not stopped gracefully: only an
    abnormal end (kill -9, the OOM killer) takes a supervisor away without stopping its workers,
    and a worker left draining would keep the port from the server started in its place."""
    supervisor = multiprocessing.parent_process()
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != supervisor.pid:  # It had already gone.
        os.kill(os.getpid(), signal.SIGKILL)
{%- if cookiecutter.websockets %}


def protect(router):
    return report_errors(SameOriginValidator(AuthMiddlewareStack(WebSocketLimits(router))))


def report_errors(application):
    """With SENTRY_DSN, `application` inside Sentry's ASGI middleware, which reports what it
    raises: Sentry's Django integration wraps Django's HTTP handler only, and an exception in
    a consumer would reach the server's log and nothing else."""
    if not getattr(settings, "SENTRY_DSN", ""):
        return application  # sentry_sdk is not imported.
    from sentry_sdk.integrations.asgi import SentryAsgiMiddleware

    return SentryAsgiMiddleware(application)
{%- endif %}
