"""Logging helpers referred to by settings.LOGGING."""

import logging


class ClientMistake(logging.Filter):
    """Log a record about a client's mistake (a foreign Host header, say) as one WARNING
    line: Django logs them as errors with a traceback, which buries the real ones."""

    def filter(self, record):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


class WorkerStop(logging.Filter):
    """The tasks' worker logs the signal that stops it as a WARNING, with a hint meant for a
    terminal ("press Ctrl+C again to force"). A stop is routine (every deploy, every runserver
    reload): one INFO line that says what happens."""

    def filter(self, record):
        if str(record.msg).startswith("Received %s - shutting down gracefully"):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "Received %s: finishing the task in hand, then stopping"
        return True
{%- if cookiecutter.server == "hypercorn" and cookiecutter.websockets %}


class ConnectionTimedOut(logging.Filter):
    """A connection the kernel gave up on (TCP_USER_TIMEOUT, set by limits.py for clients that
    stop reading) is the client's doing: hypercorn lets the error reach asyncio, which logs it
    as an error with a traceback. One INFO line instead."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TimeoutError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "Connection timed out: %s", (error,)
            record.exc_info = record.exc_text = None
        return True
{%- endif %}
{%- if cookiecutter.server == "daphne" %}


class Http2Notice(logging.Filter):
    """daphne says at every start whether it could speak HTTP/2, which it only does over TLS,
    left here to the proxy in front: the line is dropped."""

    def filter(self, record):
        return not record.getMessage().startswith("HTTP/2 support")
{%- endif %}
