"""The panel's roles, as Django groups and the permissions each one holds.

- operators: read everything the panel shows, and act: send, replay, cancel, re-send, use the kill switches;
  keep the payload library.
- support: read-only on commands, accounts (their policies and risk) and protective actions.
- superusers: everything, including API tokens, staff scopes and the simulator.

`sync_roles` takes an app registry so the data migration (historical models) and the
`panel_roles` management command (live models) share it. Permissions are created when missing:
in a fresh database the migration runs before post_migrate has created any.
"""

from __future__ import annotations

from typing import Any

OPERATORS = "operators"
SUPPORT = "support"

_VIEW = ("view",)
_KEEP = ("view", "add", "change", "delete")

# (app_label, model_name) -> actions, per group.
ROLE_MODEL_PERMISSIONS: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {
    OPERATORS: {
        ("alerts", "alert"): ("view", "change"),  # change: acknowledge
        ("tenancy", "tenant"): _VIEW,
        ("tenancy", "apitoken"): _VIEW,
        ("policies", "tradingaccount"): _VIEW,
        ("policies", "policysnapshot"): _VIEW,
        ("policies", "accountrisk"): _VIEW,
        ("policies", "risksample"): _VIEW,
        ("policies", "protectiveaction"): _VIEW,
        ("policies", "monitorheartbeat"): _VIEW,
        ("commands", "command"): _VIEW,
        ("commands", "commandevent"): _VIEW,
        ("commands", "idempotencyrecord"): _VIEW,
        ("callbacks", "callbackdelivery"): _VIEW,
        ("callbacks", "callbackattempt"): _VIEW,
        ("panel", "librarypayload"): _KEEP,
        ("panel", "panelsend"): _VIEW,
        ("panel", "killswitchuse"): _VIEW,
    },
    SUPPORT: {
        ("policies", "tradingaccount"): _VIEW,
        ("policies", "policysnapshot"): _VIEW,
        ("policies", "accountrisk"): _VIEW,
        ("policies", "risksample"): _VIEW,
        ("policies", "protectiveaction"): _VIEW,
        ("commands", "command"): _VIEW,
        ("commands", "commandevent"): _VIEW,
    },
}

# The panel's own permissions (panel.PanelAccess): codename -> name.
PANEL_PERMISSIONS: dict[str, str] = {
    "send_payload": "Can send payloads through the API from the panel",
    "replay_payload": "Can replay payloads from the test payload library",
    "cancel_command": "Can cancel queued commands",
    "resend_callback": "Can re-send callback deliveries",
    "use_builder": "Can use the payload builder",
    "view_environment": "Can view the environment page",
    "view_catalogue": "Can view the command catalogue",
    "use_kill_switch": "Can disable, close out and enable trading (kill switches)",
}

ROLE_PANEL_PERMISSIONS: dict[str, tuple[str, ...]] = {
    OPERATORS: tuple(PANEL_PERMISSIONS),
    SUPPORT: ("use_builder", "view_catalogue"),
}


def sync_roles(apps: Any) -> None:
    """Create both groups and give each exactly the permissions above (idempotent)."""
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    content_type_model = apps.get_model("contenttypes", "ContentType")

    def permission(app_label: str, model: str, codename: str, name: str) -> Any:
        content_type, _ = content_type_model.objects.get_or_create(app_label=app_label, model=model)
        found, _ = permission_model.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name[:255]}
        )
        return found

    for group_name in (OPERATORS, SUPPORT):
        wanted = []
        for (app_label, model), actions in ROLE_MODEL_PERMISSIONS[group_name].items():
            try:
                verbose_name = apps.get_model(app_label, model)._meta.verbose_name
            except LookupError:  # a model newer than the migration running this (a later one adds it)
                continue
            for action in actions:
                wanted.append(permission(app_label, model, f"{action}_{model}", f"Can {action} {verbose_name}"))
        for codename in ROLE_PANEL_PERMISSIONS[group_name]:
            wanted.append(permission("panel", "panelaccess", codename, PANEL_PERMISSIONS[codename]))
        group, _ = group_model.objects.get_or_create(name=group_name)
        group.permissions.set(wanted)
