"""The lane rule of PROTOCOL.md §5, in one place.

`fast` when `fast_lane` is true or `priority` is `critical`, and always for protective commands
the bridge raises itself; `normal` otherwise.
"""

from __future__ import annotations

from django.db import models


class Lane(models.TextChoices):
    NORMAL = "normal"
    FAST = "fast"


# The django-q2 cluster that serves each lane: `normal` is the default cluster, `fastlane` the
# ALT_CLUSTERS entry started with Q_CLUSTER_NAME=fastlane.
CLUSTER_FOR_LANE: dict[str, str | None] = {Lane.NORMAL: None, Lane.FAST: "fastlane"}
QUEUE_KEY_FOR_LANE: dict[str, str] = {Lane.NORMAL: "normal", Lane.FAST: "fastlane"}


def lane_for(*, priority: str, fast_lane: bool, raised_by_bridge: bool) -> Lane:
    if raised_by_bridge or fast_lane or priority == "critical":
        return Lane.FAST
    return Lane.NORMAL
