"""Error reporting (Sentry): off without SENTRY_DSN, and on with it without slowing requests."""

from .production import run_in_production

SENTRY_VARIABLES = (
    "SENTRY_DSN",
    "SENTRY_ENVIRONMENT",
    "SENTRY_RELEASE",
    "SENTRY_TRACES_SAMPLE_RATE",
)
# Serves the home page twice through the project's request path, in production; prints the
# round trips to the request's thread made by the second (asgi_runtime/middleware.py keeps
# them few), whether sentry_sdk was imported, and Sentry's options.
SERVE_A_PAGE = """
import asyncio, json, sys
import django
django.setup()
from asgi_runtime.handler import FastASGIHandler
from asgi_runtime.tests.fast_path.client import Client, count_hops

async def hops():
    client = Client(FastASGIHandler())
    await client.get("/", host="example.com", scheme="https")
    with count_hops() as counts:
        response = await client.get("/", host="example.com", scheme="https")
    assert response.status == 200, response.status
    return counts["hops"]

shown = {"hops": asyncio.run(hops()), "sentry imported": "sentry_sdk" in sys.modules}
if shown["sentry imported"]:
    import sentry_sdk
    options = sentry_sdk.get_client().options
    names = ("environment", "release", "traces_sample_rate", "send_default_pii")
    shown.update({name: options[name] for name in names})
print(json.dumps(shown))
"""


def serve_a_page(**variables):
    return run_in_production(
        SERVE_A_PAGE, unset=SENTRY_VARIABLES, EMAIL_URL="smtp://127.0.0.1:25", **variables
    )


def test_without_a_dsn_sentry_is_not_even_imported():
    assert serve_a_page()["sentry imported"] is False


def test_with_a_dsn_sentry_reports_from_the_same_request_path():
    without = serve_a_page()
    # Nothing listens there: what would be sent is dropped.
    shown = serve_a_page(SENTRY_DSN="http://public@127.0.0.1:9/1", SENTRY_RELEASE="1.2.3")

    assert shown == {
        # Sentry wraps each middleware: its hooks still run on the event loop.
        "hops": without["hops"],
        "sentry imported": True,
        "environment": "production",
        "release": "1.2.3",
        "traces_sample_rate": None,  # No tracing unless SENTRY_TRACES_SAMPLE_RATE says so.
        "send_default_pii": False,
    }
