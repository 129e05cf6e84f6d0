"""Portal app configuration (holds the shared templates tags and management commands)."""

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"
