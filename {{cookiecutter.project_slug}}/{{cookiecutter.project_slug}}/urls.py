"""
HTTP routes. /healthz and /readyz are answered earlier, by the middleware in health.py.
{%- if cookiecutter.websockets %}
WebSocket routes live in rooms/routing.py and are wired in by asgi.py.
{%- endif %}

https://docs.djangoproject.com/en/stable/topics/http/urls/
"""

from django.contrib import admin
from django.urls import {% if cookiecutter.websockets %}include, {% endif %}path

urlpatterns = [
    path("admin/", admin.site.urls),
{%- if cookiecutter.websockets %}
    path("", include("rooms.urls")),
{%- endif %}
]
