"""How django-allauth treats this site's accounts, where it differs from allauth's defaults."""

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.core.ratelimit import respond_429
from django.core.exceptions import ValidationError


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
