"""Output shapes of the API (and their OpenAPI documentation)."""

from __future__ import annotations

from rest_framework import serializers

from commands.lanes import Lane
from commands.models import Command, CommandEvent
from commands.states import State


class ProblemFieldSerializer(serializers.Serializer):
    field = serializers.CharField()
    message = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details, with a stable `code`."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField()
    correlation_id = serializers.CharField(allow_null=True)
    errors = ProblemFieldSerializer(many=True)  # type: ignore[assignment]  # a declared field, not Serializer.errors: DRF's metaclass moves it into _declared_fields


class AcceptedSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["accepted"])
    command_id = serializers.CharField()
    state = serializers.ChoiceField(choices=State.choices)
    lane = serializers.ChoiceField(choices=Lane.choices)
    correlation_id = serializers.CharField()
    idempotency_key = serializers.CharField()
    received_at_utc = serializers.DateTimeField()


class PolicyResultSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["applied", "unchanged"])
    account_login = serializers.IntegerField()
    policy_version = serializers.IntegerField()


class CommandEventSerializer(serializers.ModelSerializer):
    at_utc = serializers.DateTimeField(source="at")

    class Meta:
        model = CommandEvent
        fields = ["kind", "at_utc", "from_state", "to_state", "attempt", "note", "request", "response"]


class CommandSerializer(serializers.ModelSerializer):
    """A command as the API gives it; an absent text is null, never "" (PROTOCOL §9)."""

    account_login = serializers.IntegerField(source="account.login")
    server = serializers.CharField(source="account.server")
    received_at_utc = serializers.DateTimeField(source="received_at")
    queued_at_utc = serializers.DateTimeField(source="queued_at", allow_null=True)
    started_at_utc = serializers.DateTimeField(source="started_at", allow_null=True)
    finished_at_utc = serializers.DateTimeField(source="finished_at", allow_null=True)
    expires_at_utc = serializers.DateTimeField(source="expires_at", allow_null=True)
    mt5_result = serializers.JSONField(source="result", allow_null=True)
    reason = serializers.CharField(allow_null=True)
    error_code = serializers.CharField(allow_null=True)
    error_message = serializers.CharField(allow_null=True)

    class Meta:
        model = Command
        fields = [
            "command_id",
            "command_type",
            "state",
            "lane",
            "priority",
            "source",
            "reason",
            "account_login",
            "server",
            "attempts",
            "payload",
            "mt5_result",
            "error_code",
            "error_message",
            "correlation_id",
            "idempotency_key",
            "received_at_utc",
            "queued_at_utc",
            "started_at_utc",
            "finished_at_utc",
            "expires_at_utc",
        ]

    BLANK_AS_NULL = ("reason", "error_code", "error_message")

    def to_representation(self, instance: Command) -> dict:
        data = super().to_representation(instance)
        for name in self.BLANK_AS_NULL:
            if data.get(name) == "":
                data[name] = None
        return data


class CommandDetailSerializer(CommandSerializer):
    events = CommandEventSerializer(many=True)

    class Meta(CommandSerializer.Meta):
        fields = [*CommandSerializer.Meta.fields, "events"]
