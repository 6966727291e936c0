"""How django-allauth treats this site's accounts, where it differs from allauth's defaults."""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import context as allauth_context
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.core.ratelimit import respond_429
from django.contrib.sites.shortcuts import get_current_site
from django.core.exceptions import ValidationError

from .tasks import send_later


class AccountAdapter(DefaultAccountAdapter):
    def pre_authenticate(self, request, **credentials):
        """Past the limit of failed logins (ACCOUNT_RATE_LIMITS["login_failed"]), answer 429 with
        the 429.html page, as for every other limit, rather than a form error with 200."""
        try:
            super().pre_authenticate(request, **credentials)
        except ValidationError as error:
            if error.code != "too_many_login_attempts":
                raise
            raise ImmediateHttpResponse(respond_429(request)) from error

    def send_mail(self, template_prefix, email, context):
        """Every email of the accounts (address verification, password reset, security notices)
        is rendered here, where the request gives its links, and sent by the worker: a slow mail
        server never slows a page. As allauth's own, but for the last line."""
        request = allauth_context.request
        values = {"request": request, "email": email, "current_site": get_current_site(request)}
        values.update(context)
        send_later(self.render_mail(template_prefix, email, values))
