from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "policies"
    verbose_name = "Accounts, policies and risk"

    def ready(self) -> None:
        from execution.executors import OPEN_POSITION_GUARDS
        from execution.runner import command_finished
        from policies import receivers
        from policies.engine import open_position_guard
        from policies.services import policy_applied

        policy_applied.connect(receivers.on_policy_applied, dispatch_uid="risk-policy-applied")
        command_finished.connect(receivers.on_command_finished, dispatch_uid="risk-command-finished")
        if open_position_guard not in OPEN_POSITION_GUARDS:
            OPEN_POSITION_GUARDS.append(open_position_guard)
