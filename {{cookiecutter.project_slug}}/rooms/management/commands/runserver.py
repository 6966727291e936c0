"""
`manage.py runserver` is Django's WSGI development server: it serves HTTP only, and every
WebSocket handshake gets a 404. Say so at start, and show the command that serves both.
"""

from django.conf import settings
from django.contrib.staticfiles.management.commands.runserver import Command as RunserverCommand


def asgi_dev_command():
    """The `web:` line of Procfile.dev, the one place the development command is written."""
    for line in (settings.BASE_DIR / "Procfile.dev").read_text().splitlines():
        if line.startswith("web:"):
            return line.removeprefix("web:").strip()
    return "see Procfile.dev"


class Command(RunserverCommand):
    def inner_run(self, *args, **options):
        self.stderr.write(
            self.style.WARNING(
                "runserver is Django's WSGI server: WebSockets (/ws/...) will not work here.\n"
                f"For HTTP and WebSockets, run the ASGI development server:\n"
                f"    {asgi_dev_command()}\n"
            )
        )
        super().inner_run(*args, **options)
