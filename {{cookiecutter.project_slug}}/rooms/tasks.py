"""
The rooms' background task: adding up the messages of each room. A member's consumer counts
what it sends and enqueues this task once, as it leaves (consumers.py): a busy room costs the
database one write per visit rather than one per message, and none while people talk.
"""

from django.db.models import F

from asgi_runtime.tasks import task

from .models import Room


@task()
def count_messages(room, sent):
    """Add `sent` messages to `room`'s count; return the room's new count."""
    Room.objects.get_or_create(name=room)
    Room.objects.filter(name=room).update(messages=F("messages") + sent)
    return Room.objects.get(name=room).messages
