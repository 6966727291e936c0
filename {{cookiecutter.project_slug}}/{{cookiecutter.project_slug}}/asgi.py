"""
ASGI entry point: `application` is the object every ASGI server loads (Procfile names it).

The server calls it once per connection, with a scope (the kind of connection, its path,
headers and client) and two functions, `receive` and `send`, that exchange messages with the
client. A WSGI call returns one response; an ASGI call lasts as long as its connection, which
is what makes WebSockets possible. urls.py routes HTTP requests{% if cookiecutter.websockets %}, routing.py WebSocket
connections{% endif %}; asgi_runtime (the template's, not yours to edit) serves them.

https://docs.djangoproject.com/en/stable/howto/deployment/asgi/
{%- if cookiecutter.websockets %}
https://channels.readthedocs.io/en/stable/topics/routing.html
{%- endif %}
"""

import os
{% if cookiecutter.websockets %}
from channels.routing import ProtocolTypeRouter, URLRouter
{% endif %}
from asgi_runtime.handler import get_asgi_application
from asgi_runtime.serving import {% if cookiecutter.websockets %}protect, {% endif %}serve

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.settings")
{%- if cookiecutter.websockets %}
# Set Django up (settings, app registry) before importing the WebSocket routes: their consumers
# import models.
django_application = get_asgi_application()

from .routing import websocket_urlpatterns  # noqa: E402

application = serve(
    ProtocolTypeRouter(
        {
            "http": django_application,
            # Same-origin check, the session's user and per-connection limits, then a route.
            "websocket": protect(URLRouter(websocket_urlpatterns)),
        }
    )
)
{%- else %}

application = serve(get_asgi_application())
{%- endif %}
