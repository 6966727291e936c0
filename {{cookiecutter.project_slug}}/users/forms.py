from django.contrib.auth.forms import UserCreationForm

from .models import User


class SignupForm(UserCreationForm):
    """Django's sign-up form (username, password twice, the password validators), for the
    project's own user model."""

    class Meta(UserCreationForm.Meta):
        model = User
