"""KAITO Portal project plumbing: settings, URLs, ASGI entry point and API plumbing."""
