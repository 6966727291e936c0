"""
HTTP routes. /healthz and /readyz are answered before these (asgi_runtime/health.py).
{%- if cookiecutter.websockets %}
WebSocket routes live in routing.py, wired in by asgi.py.
{%- endif %}

https://docs.djangoproject.com/en/stable/topics/http/urls/
"""

from allauth.account.decorators import secure_admin_login
from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

if settings.DJANGO_ADMIN_FORCE_ALLAUTH:
    # /admin/login/ redirects to the site's login (/accounts/login/?next=/admin/): its rate
    # limits, email verification and second factor hold for staff too. A signed-in user who is
    # not staff gets 403 there instead of Django's form. settings.py says how to turn it off.
    admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    # Sign-up, login, email verification, password reset and change (django-allauth).
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
{%- if cookiecutter.websockets %}
    path("rooms/", include("rooms.urls")),
{%- endif %}
]
