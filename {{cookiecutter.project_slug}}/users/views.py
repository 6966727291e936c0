from django.conf import settings
from django.contrib.auth import login
from django.views.generic import CreateView

from .forms import SignupForm


class SignupView(CreateView):
    """Create an account and sign in with it."""

    form_class = SignupForm
    template_name = "registration/signup.html"
    success_url = settings.LOGIN_REDIRECT_URL

    def form_valid(self, form):
        response = super().form_valid(form)
        login(self.request, self.object)
        return response
