from django.db import models


class Room(models.Model):
    """A room people have talked in, and how many messages they sent there: counted by a
    background task (tasks.py) as each member leaves, not by the consumer on every message."""

    name = models.CharField(max_length=64, unique=True)
    messages = models.PositiveBigIntegerField(default=0)

    def __str__(self):
        return self.name
