"""
`manage.py runserver` is Django's WSGI development server, not the ASGI server this project
runs on: it serves no WebSockets, and no lifespan messages. Say so at start, and show the
command that runs the project the way production does.
"""

from django.conf import settings
from django.contrib.staticfiles.management.commands.runserver import Command as RunserverCommand


def asgi_dev_command():
    """The `web:` line of Procfile.dev, the one place the development command is written."""
    for line in (settings.BASE_DIR / "Procfile.dev").read_text().splitlines():
        if line.startswith("web:"):
            return "uv run " + line.removeprefix("web:").strip()
    return "see Procfile.dev"


class Command(RunserverCommand):
    def inner_run(self, *args, **options):
        self.stderr.write(
            self.style.WARNING(
{%- if cookiecutter.websockets %}
                "runserver is Django's WSGI server: WebSockets (/ws/...) will not work here.\n"
{%- else %}
                "runserver is Django's WSGI server; this project is served over ASGI.\n"
{%- endif %}
                "Run the ASGI development server instead:\n"
                f"    {asgi_dev_command()}\n"
            )
        )
        super().inner_run(*args, **options)
