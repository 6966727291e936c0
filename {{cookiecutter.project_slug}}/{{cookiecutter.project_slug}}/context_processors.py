"""Template context for Django 5.2, where settings.py lists it."""


def csp_nonce(request):
    """The response's Content Security Policy nonce as `csp_nonce`, the name Django 6's own
    context processor gives it (django-csp's calls it CSP_NONCE): templates use one name on
    both. django-csp's middleware makes the nonce when a template first uses it."""
    return {"csp_nonce": getattr(request, "csp_nonce", "")}
