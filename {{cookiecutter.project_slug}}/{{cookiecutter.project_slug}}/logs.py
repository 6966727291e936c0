"""Logging helpers referred to by settings.LOGGING."""

import logging


class ClientMistake(logging.Filter):
    """Log a record about a client's mistake (a foreign Host header, say) as one WARNING
    line: Django logs them as errors with a traceback, which buries the real ones."""

    def filter(self, record):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True
