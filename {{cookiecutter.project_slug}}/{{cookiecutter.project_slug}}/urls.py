"""
HTTP routes. /healthz and /readyz are answered before these (asgi_runtime/health.py).
{%- if cookiecutter.websockets %}
WebSocket routes live in routing.py, wired in by asgi.py.
{%- endif %}

https://docs.djangoproject.com/en/stable/topics/http/urls/
"""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    # Sign-up, login, email verification, password reset and change (django-allauth).
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
{%- if cookiecutter.websockets %}
    path("rooms/", include("rooms.urls")),
{%- endif %}
]
