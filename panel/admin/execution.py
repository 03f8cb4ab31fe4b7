"""The MT5 simulator's trade server, for superusers: accounts and symbols to tune, faults to inject, history to read.

These rows belong to no tenant, so tenant-scoped staff never see them (panel.scoping).
"""

from __future__ import annotations

from django.contrib import admin
from unfold.decorators import display

from execution.models import SimAccount, SimDeal, SimFault, SimOrder, SimPosition, SimSymbol, SimTicketSequence
from panel.admin.base import BigTableMixin, ReadOnlyMixin, ScopedAdmin


@admin.register(SimAccount)
class SimAccountAdmin(ScopedAdmin[SimAccount]):
    list_display = ("login", "server", "currency", "balance", "credit", "leverage", "trade_allowed", "trade_expert")
    list_filter = ("trade_allowed", "trade_expert")
    search_fields = ("name", "server")
    readonly_fields = ("created_at",)


@admin.register(SimSymbol)
class SimSymbolAdmin(ScopedAdmin[SimSymbol]):
    list_display = ("name", "bid", "ask", "digits", "sessions_open", "typical_spread", "volume_min", "volume_max")
    list_filter = ("sessions_open",)
    search_fields = ("name",)


@admin.register(SimPosition)
class SimPositionAdmin(ReadOnlyMixin, ScopedAdmin[SimPosition]):
    list_display = ("ticket", "account", "symbol", "side", "volume", "price_open", "sl", "tp", "magic", "comment")
    list_select_related = ("account", "symbol")
    search_fields = ("comment",)
    show_full_result_count = False

    @display(description="side")
    def side(self, obj: SimPosition) -> str:
        return "buy" if obj.type == 0 else "sell"


@admin.register(SimOrder)
class SimOrderAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[SimOrder]):
    list_display = (
        "ticket",
        "account",
        "symbol",
        "is_open",
        "type",
        "state",
        "volume_initial",
        "price_open",
        "comment",
    )
    list_select_related = ("account", "symbol")
    list_filter = ("is_open",)
    ordering = ("-ticket",)


@admin.register(SimDeal)
class SimDealAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[SimDeal]):
    list_display = (
        "ticket",
        "account",
        "symbol",
        "type",
        "entry",
        "volume",
        "price",
        "profit",
        "position_id",
        "comment",
    )
    list_select_related = ("account",)
    ordering = ("-ticket",)


@admin.register(SimFault)
class SimFaultAdmin(ScopedAdmin[SimFault]):
    list_display = ("kind", "symbol", "login", "remaining", "created_at")
    list_filter = ("kind",)


@admin.register(SimTicketSequence)
class SimTicketSequenceAdmin(ReadOnlyMixin, ScopedAdmin[SimTicketSequence]):
    list_display = ("value",)
