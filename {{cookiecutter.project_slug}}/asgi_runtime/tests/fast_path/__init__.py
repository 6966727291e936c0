"""Helpers of test_fast_path.py: a browser-like ASGI client and test-only views."""
