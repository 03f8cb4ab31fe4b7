from django.apps import AppConfig


class CommandsConfig(AppConfig):
    name = "commands"
    verbose_name = "Commands and idempotency"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from commands.heartbeat import on_worker_spawned

        post_spawn.connect(on_worker_spawned, dispatch_uid="lane-heartbeat")
