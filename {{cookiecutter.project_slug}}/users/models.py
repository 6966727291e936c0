from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """The project's user: Django's fields for now, and yours to extend, a migration away."""
