"""Workspace rows: teams and their members, requests with their audit trail, secrets awaiting apply."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse

DNS1123_LABEL = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "Use lower-case letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label).",
)


class Team(models.Model):
    """A group of users that owns one Kubernetes namespace and a monthly GPU budget."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    namespace = models.CharField(max_length=63, unique=True, validators=[DNS1123_LABEL])
    monthly_budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Estimated GPU spend that may be approved per calendar month; empty means no limit.",
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="teams")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        REQUESTER = "requester", "Requester"
        APPROVER = "approver", "Approver"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role, default=Role.REQUESTER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class Status(models.TextChoices):
    PENDING_APPROVAL = "PENDING_APPROVAL", "Pending approval"
    REJECTED = "REJECTED", "Rejected"
    WITHDRAWN = "WITHDRAWN", "Withdrawn"
    APPROVED = "APPROVED", "Approved"
    PROVISIONING = "PROVISIONING", "Provisioning"
    READY = "READY", "Ready"
    RUNNING = "RUNNING", "Running"
    SUCCEEDED = "SUCCEEDED", "Succeeded"
    FAILED = "FAILED", "Failed"
    EXPIRED = "EXPIRED", "Expired"
    DELETING = "DELETING", "Deleting"
    DELETED = "DELETED", "Deleted"


# Badge colour per status (templates) and the groups other code reasons about.
STATUS_COLORS = {
    Status.PENDING_APPROVAL: "warn",
    Status.APPROVED: "accent",
    Status.PROVISIONING: "accent",
    Status.RUNNING: "accent",
    Status.READY: "ok",
    Status.SUCCEEDED: "ok",
    Status.FAILED: "bad",
    Status.REJECTED: "bad",
}
# Statuses in which the request has (or is about to have) objects in the cluster.
IN_CLUSTER = {Status.APPROVED, Status.PROVISIONING, Status.READY, Status.RUNNING, Status.DELETING}
# Statuses that never change again; the browser stops polling.
FINAL = {Status.REJECTED, Status.WITHDRAWN, Status.DELETED}
# Statuses that count against the team's budget.
SPENDING = {
    Status.APPROVED,
    Status.PROVISIONING,
    Status.READY,
    Status.RUNNING,
    Status.SUCCEEDED,
    Status.FAILED,
    Status.EXPIRED,
    Status.DELETING,
    Status.DELETED,
}


class WorkspaceRequestQuerySet(models.QuerySet["WorkspaceRequest"]):
    def visible_to(self, user: AbstractBaseUser) -> WorkspaceRequestQuerySet:
        """Requests of the user's teams; an admin sees everything."""
        if user.is_superuser:
            return self
        return self.filter(team__memberships__user=user)

    def approvable_by(self, user: AbstractBaseUser) -> WorkspaceRequestQuerySet:
        """Requests this user may decide on: an approver of the team, never the requester."""
        queryset = (
            self
            if user.is_superuser
            else self.filter(team__memberships__user=user, team__memberships__role=Membership.Role.APPROVER)
        )
        return queryset.exclude(requester=user)

    def with_related(self) -> WorkspaceRequestQuerySet:
        return self.select_related("team", "requester", "preset", "instance_type", "decided_by")


class WorkspaceRequest(models.Model):
    """A request for a KAITO Workspace: what was asked, what was decided, what the cluster reports."""

    class Kind(models.TextChoices):
        INFERENCE = "inference", "Inference"
        TUNING = "tuning", "Fine-tuning"

    class Runtime(models.TextChoices):
        VLLM = "vllm", "vLLM"
        TRANSFORMERS = "transformers", "Transformers"

    class Method(models.TextChoices):
        QLORA = "qlora", "QLoRA"
        LORA = "lora", "LoRA"

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="requests")
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="workspace_requests")
    kind = models.CharField(max_length=20, choices=Kind)
    name = models.CharField(max_length=63, validators=[DNS1123_LABEL])
    namespace = models.CharField(max_length=63, validators=[DNS1123_LABEL])
    preset = models.ForeignKey("catalog.Preset", on_delete=models.PROTECT, related_name="requests")
    instance_type = models.ForeignKey(
        "catalog.InstanceType", on_delete=models.PROTECT, null=True, blank=True, related_name="requests"
    )
    node_selector = models.JSONField(default=dict, blank=True, help_text="Bring-your-own-nodes labels.")
    runtime = models.CharField(max_length=20, choices=Runtime, default=Runtime.VLLM)
    node_count = models.PositiveSmallIntegerField(default=1, help_text="Nodes KAITO's estimator will use.")
    hours = models.PositiveIntegerField(help_text="Expiry (inference) or maximum run time (tuning), in hours.")
    purpose = models.TextField(blank=True)
    # Inference
    adapters = models.JSONField(default=list, blank=True)
    inference_config = models.TextField(blank=True)
    hf_token_secret = models.CharField(max_length=253, blank=True, help_text="Secret with key HF_TOKEN.")
    # Tuning
    method = models.CharField(max_length=10, choices=Method, blank=True)
    input_urls = models.JSONField(default=list, blank=True)
    input_image = models.CharField(max_length=500, blank=True)
    input_image_pull_secrets = models.JSONField(default=list, blank=True)
    input_pvc = models.CharField(max_length=253, blank=True)
    output_image = models.CharField(max_length=500, blank=True)
    output_push_secret = models.CharField(max_length=253, blank=True)
    output_pvc = models.CharField(max_length=253, blank=True)
    training_config = models.TextField(blank=True)
    # Cost estimate, frozen when the request is made
    hourly_price_usd = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    estimated_cost_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    price_source = models.CharField(max_length=255, blank=True)
    # Decision
    status = models.CharField(max_length=20, choices=Status, default=Status.PENDING_APPROVAL, db_index=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    budget_override = models.BooleanField(default=False)
    # What the cluster reports
    status_message = models.TextField(blank=True, help_text="Plain-language explanation of the status.")
    kaito_state = models.CharField(max_length=20, blank=True)
    conditions = models.JSONField(default=list, blank=True)
    target_node_count = models.PositiveSmallIntegerField(null=True, blank=True)
    worker_nodes = models.JSONField(default=list, blank=True)
    performance = models.JSONField(default=dict, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    observed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, help_text="Last cluster error; retried with backoff.")
    # Chat: the protocol the model endpoint speaks, remembered after the first detection.
    chat_protocol = models.CharField(max_length=10, blank=True)
    preflight = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkspaceRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One live request per Workspace name in a namespace; finished ones keep their history.
            models.UniqueConstraint(
                fields=["namespace", "name"],
                condition=~Q(status__in=["REJECTED", "WITHDRAWN", "DELETED", "EXPIRED"]),
                name="one_live_workspace_name_per_namespace",
            )
        ]
        indexes = [models.Index(fields=["team", "status"])]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def get_absolute_url(self) -> str:
        return reverse("workspaces:request-detail", args=[self.pk])

    @property
    def status_color(self) -> str:
        return STATUS_COLORS.get(self.status, "")

    @property
    def is_final(self) -> bool:
        return self.status in FINAL


class WorkspaceEvent(models.Model):
    """One audit entry: who moved which request from what to what, when, and why."""

    request = models.ForeignKey(WorkspaceRequest, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, help_text="Empty: the portal."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    from_status = models.CharField(max_length=20, choices=Status, blank=True)
    to_status = models.CharField(max_length=20, choices=Status)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.request}: {self.from_status or '—'} → {self.to_status}"


class PendingSecret(models.Model):
    """A secret value held encrypted until the request is applied (then deleted) or abandoned."""

    class Purpose(models.TextChoices):
        HF_TOKEN = "hf_token", "Hugging Face token"
        REGISTRY = "registry", "Registry credentials"

    request = models.ForeignKey(WorkspaceRequest, on_delete=models.CASCADE, related_name="pending_secrets")
    purpose = models.CharField(max_length=20, choices=Purpose)
    ciphertext = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["request", "purpose"], name="one_secret_per_purpose")]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()} for {self.request}"


class Conversation(models.Model):
    """One user's chat with a workspace's model: the settings it was held with and its messages."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    request = models.ForeignKey(WorkspaceRequest, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True, help_text="Model id: the base model or a LoRA adapter.")
    system_prompt = models.TextField(blank=True)
    parameters = models.JSONField(default=dict, blank=True, help_text="temperature, top_p, max_tokens.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["user", "request", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    """One turn; an assistant turn that failed keeps what arrived, marked incomplete with the reason."""

    class Role(models.TextChoices):
        USER = "user", "You"
        ASSISTANT = "assistant", "Model"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role)
    content = models.TextField(blank=True)
    reasoning = models.TextField(blank=True, help_text="What a reasoning model thought before answering.")
    model = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finish_reason = models.CharField(max_length=30, blank=True)
    usage = models.JSONField(null=True, blank=True)
    # True from the moment an answer starts until it ends normally: a crash mid-stream leaves it marked.
    incomplete = models.BooleanField(default=False)
    error_kind = models.CharField(max_length=30, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk} in {self.conversation_id}"
