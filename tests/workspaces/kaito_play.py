"""Plays KAITO v0.12's controller in tests: status patches exactly as workspace_controller.go writes them."""

import datetime as dt


def condition(kind, status, reason, message=""):
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
        "observedGeneration": 1,
    }


def pending(instance_type="Standard_NV36ads_A10_v5"):
    return {
        "state": "Pending",
        "targetNodeCount": 1,
        "conditions": [
            condition("NodeClaimReady", "False", "NodeClaimNotReady", f"nodeClaim for {instance_type} is not ready"),
            condition("ResourceReady", "False", "workspaceResourceStatusNotReady", "node claim not ready"),
            condition("InferenceReady", "False", "WorkspaceInferenceStatusPending", "inference is not ready"),
            condition("WorkspaceSucceeded", "False", "workspacePending", "workspace is pending"),
        ],
    }


def ready(nodes=("aks-ws-1",)):
    return {
        "state": "Ready",
        "targetNodeCount": len(nodes),
        "workerNodes": list(nodes),
        "conditions": [
            condition("NodeClaimReady", "True", "NodeClaimsReady"),
            condition("NodesReady", "True", "NodesReady"),
            condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
            condition("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
            condition("WorkspaceSucceeded", "True", "workspaceSucceeded"),
        ],
        "performance": {
            "metrics": {"peakTokensPerMinute": {"description": "peak", "value": "48000", "unit": "tokens/min"}}
        },
    }


def tuning_running():
    return {
        "state": "Running",
        "targetNodeCount": 1,
        "conditions": [
            condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
            condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted", "tuning job started"),
            condition("WorkspaceSucceeded", "False", "workspacePending"),
        ],
    }


def tuning_succeeded():
    return {
        "state": "Succeeded",
        "targetNodeCount": 1,
        "conditions": [
            condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
            condition("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
            condition("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeded"),
        ],
    }


def patch_status(custom, namespace, name, status):
    return custom.patch_namespaced_custom_object_status(
        "kaito.sh",
        "v1beta1",
        namespace,
        "workspaces",
        name,
        {"status": status},
        _content_type="application/merge-patch+json",
    )
