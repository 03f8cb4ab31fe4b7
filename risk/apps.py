from django.apps import AppConfig


class RiskConfig(AppConfig):
    name = "risk"
    verbose_name = "Risk engine"

    def ready(self) -> None:
        """Answer the lower layers' hooks: every place the risk engine reacts to them is here."""
        from execution import hooks as execution_hooks
        from policies import hooks as policies_hooks
        from risk import receivers
        from risk.engine import modify_position_limits, open_position_guard, open_position_limits

        policies_hooks.policy_applied.connect(receivers.on_policy_applied)
        policies_hooks.policy_objections.connect(receivers.policy_objections)
        execution_hooks.command_finished.connect(receivers.on_command_finished)
        execution_hooks.open_position_guard.connect(open_position_guard)
        execution_hooks.open_position_limits.connect(open_position_limits)
        execution_hooks.modify_position_limits.connect(modify_position_limits)
