"""Jinja filters for cookiecutter.json, loaded through its `_extensions` key."""

from cookiecutter.utils import simple_filter
from slugify import slugify

# What the default package name may be, at most (hooks/pre_gen_project.py refuses longer).
MAX_PACKAGE_NAME = 32


@simple_filter
def package_name(project_name):
    """A Python package name for a project name: "Café Déjà Vu" gives "cafe_deja_vu".

    ASCII transliteration, lower case, words joined by "_", apostrophes dropped ("Bob's Chat"
    gives "bobs_chat"), cut at a word boundary; a name that would start with a digit gets
    "project_" in front ("2FA Service" gives "project_2fa_service"), and one without a letter
    or digit is "project".
    """
    words = project_name.replace("'", "").replace("\u2019", "")
    if slugify(words)[:1].isdigit():
        words = f"project {words}"
    name = slugify(words, separator="_", max_length=MAX_PACKAGE_NAME, word_boundary=True)
    return name or "project"
