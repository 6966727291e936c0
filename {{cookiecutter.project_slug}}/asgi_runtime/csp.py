"""
Django 6.0's Content Security Policy middleware, for Django 5.2.

Django 6.0 sends the Content-Security-Policy header itself: SECURE_CSP (and
SECURE_CSP_REPORT_ONLY) in settings, `django.middleware.csp.ContentSecurityPolicyMiddleware`,
and a nonce per request for the page's own scripts and styles, given to templates as
`csp_nonce` by the `django.template.context_processors.csp` context processor. This module is
the same code for Django 5.2, with the same settings, constants, request attribute
(`request._csp_nonce`) and template variable, so that one policy, written once in settings.py,
serves both: settings.py names Django's classes on 6.0 and later, these on 5.2. Nothing here
is used on Django 6.

One difference: Django 6 marks its debug pages (the yellow 404 and 500 pages of DEBUG) to be
sent without a policy, since they use inline styles and scripts. Django 5.2's pages carry no
such mark, so with DEBUG on, 404 and 500 responses go without one here.

middleware.py runs this middleware's hooks on the event loop, as Django's: neither does I/O.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin
from django.utils.functional import SimpleLazyObject, empty


class CSP(StrEnum):
    """The values of a policy, as django.utils.csp.CSP (Django 6)."""

    HEADER_ENFORCE = "Content-Security-Policy"
    HEADER_REPORT_ONLY = "Content-Security-Policy-Report-Only"

    NONE = "'none'"
    REPORT_SAMPLE = "'report-sample'"
    SELF = "'self'"
    STRICT_DYNAMIC = "'strict-dynamic'"
    UNSAFE_EVAL = "'unsafe-eval'"
    UNSAFE_HASHES = "'unsafe-hashes'"
    UNSAFE_INLINE = "'unsafe-inline'"
    WASM_UNSAFE_EVAL = "'wasm-unsafe-eval'"

    # Replaced by the request's nonce in the header (Django 6 uses the same placeholder).
    NONCE = "<CSP_NONCE_SENTINEL>"


def generate_nonce() -> str:
    return secrets.token_urlsafe(16)


class LazyNonce(SimpleLazyObject):
    """The request's nonce, made when first used: true once it has been."""

    def __init__(self) -> None:
        super().__init__(generate_nonce)

    def __bool__(self) -> bool:
        return self._wrapped is not empty


def build_policy(config: dict[str, Any], nonce: Any = None) -> str:
    """The header's value: each directive and its sources, the nonce placeholder replaced by
    `nonce` if it was used, and left out otherwise."""
    policy = []
    for directive, values in config.items():
        if values in (None, False):
            continue
        if values is True:
            rendered = ""
        else:
            if isinstance(values, set):
                values = sorted(values)
            elif not isinstance(values, list | tuple):
                values = [values]
            if (has_sentinel := CSP.NONCE in values) and nonce:
                values = [f"'nonce-{nonce}'" if value == CSP.NONCE else value for value in values]
            elif has_sentinel:
                values = [value for value in values if value != CSP.NONCE]
            if not values:
                continue
            rendered = " ".join(values)
        policy.append(f"{directive} {rendered}".rstrip())
    return "; ".join(policy)


def get_nonce(request: HttpRequest) -> Any:
    return getattr(request, "_csp_nonce", None)


# Each header, the setting it is built from, and the response attribute that replaces the setting.
HEADERS = (
    (CSP.HEADER_ENFORCE, "SECURE_CSP", "_csp_config"),
    (CSP.HEADER_REPORT_ONLY, "SECURE_CSP_REPORT_ONLY", "_csp_ro_config"),
)


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Sends SECURE_CSP and SECURE_CSP_REPORT_ONLY, unless the response has its own header."""

    def process_request(self, request: HttpRequest) -> None:
        request._csp_nonce = LazyNonce()  # type: ignore[attr-defined]

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> Any:
        nonce = get_nonce(request)
        for header, setting, attribute in HEADERS:
            if hasattr(response, attribute):
                config = getattr(response, attribute)
            elif settings.DEBUG and response.status_code in (404, 500):
                config = {}  # Possibly a debug page (see above).
            else:
                config = getattr(settings, setting, {})
            if config and header not in response:
                response.headers[str(header)] = build_policy(config, nonce)
        return response


def context_processor(request: HttpRequest) -> dict[str, Any]:
    """`csp_nonce` for templates, as django.template.context_processors.csp (Django 6)."""
    return {"csp_nonce": get_nonce(request)}
