import sys

from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    name = "execution"
    verbose_name = "Execution (MT5 gateways, simulator, lanes)"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from execution.heartbeat import on_worker_spawned

        # django-q2's own signal, received in the app that runs the lanes.
        post_spawn.connect(on_worker_spawned, dispatch_uid="lane-heartbeat")
        if sys.argv[1:2] == ["qcluster"]:
            from execution.cluster import install

            install()  # a killed idle worker must not wedge its lane (execution/cluster.py)
