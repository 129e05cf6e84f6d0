"""Where OIDC sign-in left its marks: the provider identity of a user, and memberships granted by groups."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class OidcIdentity(models.Model):
    """Links a user to (issuer, subject): the only stable id a provider gives (email and names can change)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "portal"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="one_user_per_oidc_subject")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class OidcMembership(models.Model):
    """A team membership that exists because of the user's groups; sign-in removes it when the groups go.

    Memberships without this row were made by hand (admin) and sign-in never touches them.
    """

    membership = models.OneToOneField("workspaces.Membership", on_delete=models.CASCADE, related_name="oidc_grant")
    groups = models.JSONField(default=list, help_text="The groups that granted it at the last sign-in.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "portal"

    def __str__(self) -> str:
        return f"{self.membership} from {', '.join(self.groups)}"
