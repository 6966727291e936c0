"""asgi_runtime's own tests: it behaves as Django does, and as its docstrings say."""
