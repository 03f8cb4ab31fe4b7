"""``ManagerConnection``: one manager connection to an MT5 server, kept up.

- Connects with pumping (``verify.PUMP_MODE``) and subscribes one sink object to the
  connection, position, deal, order, user, user-account (margin call and stop-out) and tick
  events. Sink methods run on the API's own thread: they only put the event on a queue
  (``OnDealerAnswer`` also wakes its waiter) and never raise. A dispatcher thread of ours
  hands queued events to the listeners, in order.
- Every API call goes through ``call`` under one lock (``verify.SERIALISE_CALLS``).
- ``dealer_send`` queues a request with ``DealerSend`` and waits for its answer, correlated by
  request id, else by tag; no answer within ``verify.ANSWER_TIMEOUT_SECONDS`` (or the
  connection dropping meanwhile) is a lost answer: the caller reconciles by tag.
  ``dealer_submit`` queues one without waiting; ``dealer_poll`` looks for its answer later.
- After ``OnDisconnect`` (or a call failing with a network error) the dispatcher reconnects
  with backoff; each successful connect bumps ``generation`` and calls every listener's
  ``on_resync(connection)`` before any later event, so a listener rebuilds its state from
  ``*Request*`` reads and never trusts what it had before the drop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from execution.adapters.manager import verify
from execution.gateway import GatewayUnavailable

log = logging.getLogger(__name__)

# What the one sink is subscribed to after each connect.
SUBSCRIPTIONS = (
    "PositionSubscribe", "DealSubscribe", "OrderSubscribe", "UserSubscribe", "UserAccountSubscribe", "TickSubscribe",
)  # fmt: skip
# MT_RET_ERR_NETWORK, MT_RET_ERR_CONNECTION: the link is gone.
LINK_ERRORS = frozenset({7, 10})


class Listener(Protocol):
    def on_event(self, kind: str, args: tuple[Any, ...]) -> None: ...

    def on_resync(self, connection: ManagerConnection) -> None: ...


@dataclass
class DealerPending:
    """One dealer request DealerSend queued: its answers as they come (None: the connection
    dropped), and the final one once seen (``ManagerConnection.dealer_poll``)."""

    tag: str
    sent_at: float = 0.0  # time.monotonic() when queued
    request_id: int | None = None
    answers: queue.Queue[Any] = field(default_factory=queue.Queue)
    settled: bool = False  # a final answer came, or the link dropped (lost)
    final: Any = None  # the final answer (None when lost)


class _Sink:
    """The object the API calls back. Tiny methods: queue the event, never raise."""

    def __init__(self, owner: ManagerConnection) -> None:
        self._owner = owner

    def _put(self, kind: str, *args: Any) -> None:
        self._owner._events.put((kind, args))  # an unbounded queue's put does not fail

    def OnConnect(self) -> None:
        self._put("connect")

    def OnDisconnect(self) -> None:
        self._put("disconnect")

    def OnPositionAdd(self, position: Any) -> None:
        self._put("position_add", position)

    def OnPositionUpdate(self, position: Any) -> None:
        self._put("position_update", position)

    def OnPositionDelete(self, position: Any) -> None:
        self._put("position_delete", position)

    def OnDealAdd(self, deal: Any) -> None:
        self._put("deal_add", deal)

    def OnOrderAdd(self, order: Any) -> None:
        self._put("order_add", order)

    def OnOrderUpdate(self, order: Any) -> None:
        self._put("order_update", order)

    def OnOrderDelete(self, order: Any) -> None:
        self._put("order_delete", order)

    def OnUserUpdate(self, user: Any) -> None:
        self._put("user_update", user)

    # IMTAccountSink (UserAccountSubscribe): margin call and stop-out, entered and left. Called
    # with (account, group) (verify: the arity; the account is read from the first argument).
    def OnAccountMarginCallEnter(self, *args: Any) -> None:
        self._put("margin_call_enter", *args[:1])

    def OnAccountMarginCallLeave(self, *args: Any) -> None:
        self._put("margin_call_leave", *args[:1])

    def OnAccountStopOutEnter(self, *args: Any) -> None:
        self._put("stop_out_enter", *args[:1])

    def OnAccountStopOutLeave(self, *args: Any) -> None:
        self._put("stop_out_leave", *args[:1])

    def OnTick(self, *args: Any) -> None:
        try:
            found = verify.tick_of(args)
        except Exception:
            found = None
        if found is not None:
            self._put("tick", *found)

    def OnDealerAnswer(self, answer: Any) -> None:
        try:
            self._owner._answered(answer)
        except Exception:
            log.exception("manager dealer answer could not be matched")


class ManagerConnection:
    """One manager login to one server, reconnecting on its own; see the module docstring."""

    def __init__(
        self,
        module: Any,
        *,
        server: str,
        login: int,
        password: str,
        answer_timeout: float = verify.ANSWER_TIMEOUT_SECONDS,
        now: Callable[[], float] = time.time,
        tend: Callable[[], None] | None = None,
        after_work: Callable[[], None] | None = None,
    ) -> None:
        """``tend`` runs on the dispatcher thread after each event (the gateway closes that
        thread's database connection there when a database error left it unusable, and keeps it
        open otherwise: a breach's note must not wait for a connect); ``after_work`` runs there
        once, when the connection closes (the gateway closes the database connection with it)."""
        self.module = module
        self.server, self.login, self._password = server, login, password
        self.answer_timeout = answer_timeout
        self._now = now
        self._tend = tend
        self._after_work = after_work
        self.lock = threading.RLock()
        self._api: Any = None
        self._sink = _Sink(self)
        self._events: queue.Queue[tuple[str, tuple[Any, ...]]] = queue.Queue()
        self._listeners: list[Listener] = []
        self._waiters: dict[int, DealerPending] = {}
        self._by_tag: dict[str, DealerPending] = {}
        self.connected = False
        self.generation = 0
        self.drops = 0
        self.last_error: tuple[int, str] = (0, "")
        self.server_offset = timedelta(0)
        self._closed = threading.Event()
        self._dispatcher: threading.Thread | None = None

    # --- connecting -------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect (raising GatewayUnavailable when the server cannot be reached) and dispatch."""
        if self._dispatcher is None:
            self._dispatcher = threading.Thread(target=self._dispatch, name="manager-events", daemon=True)
            self._dispatcher.start()
        try:
            self.ensure()
        except GatewayUnavailable:
            self._events.put(("reconnect", ()))  # keep trying in the background
            raise

    def ensure(self) -> None:
        with self.lock:
            if self.connected:
                return
            self._connect()

    def _connect(self) -> None:
        if self._api is None:
            self._api = self.module.ManagerAPI()
            self._api.Subscribe(self._sink)
        ok = self._api.Connect(self.server, self.login, self._password, verify.PUMP_MODE, verify.CONNECT_TIMEOUT_MS)
        if not ok:
            self.last_error = verify.last_error(self.module)
            code, text = self.last_error
            raise GatewayUnavailable(f"Manager API Connect to {self.server} failed: ({code}) {text}", code=code)
        for subscribe in SUBSCRIPTIONS:
            if not getattr(self._api, subscribe)(self._sink):
                code, text = verify.last_error(self.module)
                log.warning("manager %s failed: (%s) %s", subscribe, code, text)
        server_seconds = self._api.TimeServer()
        if server_seconds:
            # The server's wall clock ahead of UTC, to the quarter hour.
            quarters = round((int(server_seconds) - self._now()) / 900)
            self.server_offset = timedelta(minutes=15 * quarters)
        self.connected = True
        self.generation += 1
        self._events.put(("resync", ()))

    def close(self) -> None:
        self._closed.set()
        self._events.put(("closed", ()))
        with self.lock:
            if self._api is not None:  # also when it dropped: its pump and dealer stop here
                self._api.Disconnect()
            self.connected = False
        self._fail_waiters()
        if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
            self._dispatcher.join(timeout=5)

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_dispatcher(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the dispatcher thread, in order with the events (a listener's warm-up:
        what it opens there is what its events use)."""
        self._events.put(("call", (work,)))

    # --- calls ---------------------------------------------------------------------------------------
    def call(self, name: str, *args: Any) -> Any:
        """``api.name(*args)`` under the lock, connected first; a link error marks the connection down."""
        with self.lock:
            self.ensure()
            try:
                return getattr(self._api, name)(*args)
            except Exception as exc:
                raise GatewayUnavailable(f"Manager API {name} raised {type(exc).__name__}: {exc}") from exc

    def error(self) -> tuple[int, str]:
        code, text = verify.last_error(self.module)
        if code in LINK_ERRORS:
            self._lost()
        return code, text

    def records(self, name: str, *args: Any) -> list[Any]:
        """A bulk read's records; GatewayUnavailable when it failed."""
        with self.lock:
            value = self.call(name, *args)
            found, (code, text) = verify.listed(self.module, value)
            if found is None:
                if code in LINK_ERRORS:
                    self._lost()
                raise GatewayUnavailable(f"Manager API {name} failed: ({code}) {text}", code=code)
            return found

    def record(self, name: str, *args: Any) -> Any:
        """One record, or None when the server has none (MT_RET_ERR_NOTFOUND)."""
        with self.lock:
            value = self.call(name, *args)
            if value is None or value is False:
                code, text = verify.last_error(self.module)
                if code == 13:
                    return None
                if code in LINK_ERRORS:
                    self._lost()
                raise GatewayUnavailable(f"Manager API {name} failed: ({code}) {text}", code=code)
            return value

    def new(self, name: str) -> Any:
        with self.lock:
            self.ensure()
            return verify.new_record(self.module, name, self._api)

    def _lost(self) -> None:
        """The link is gone: reconnect from the dispatcher."""
        if self.connected:
            self._events.put(("disconnect", ()))

    # --- dealing ------------------------------------------------------------------------------------
    def dealer_send(self, request: Any, tag: str) -> tuple[bool, Any]:
        """(sent, answer): sent False when DealerSend refused it (nothing left); answer None when
        it was sent but no final answer came in time (lost: reconcile by tag)."""
        pending = self.dealer_submit(request, tag)
        if pending is None:
            return False, None
        return True, self.dealer_wait(pending, self.answer_timeout)

    def dealer_submit(self, request: Any, tag: str) -> DealerPending | None:
        """Queue ``request`` with DealerSend and return at once: None when DealerSend refused it
        (nothing was sent; ``last_error`` says why), else the pending request, whose answer
        ``dealer_wait`` waits for and ``dealer_poll`` looks for without waiting."""
        pending = DealerPending(tag, sent_at=time.monotonic())
        with self.lock:
            self.ensure()
            self._forget_stale(pending.sent_at)
            self._by_tag[tag] = pending
            try:
                returned = self._api.DealerSend(request, self._sink)
            except Exception as exc:
                self._by_tag.pop(tag, None)
                raise GatewayUnavailable(f"Manager API DealerSend raised {type(exc).__name__}: {exc}") from exc
            if verify.dealer_send_failed(returned):
                self._by_tag.pop(tag, None)
                self.last_error = self.error()
                return None
            pending.request_id = verify.dealer_request_id(returned, request)
            if pending.request_id is not None:
                # The id is authoritative from now on: a late answer to an earlier request with
                # the same tag must not be taken for this one's.
                self._waiters[pending.request_id] = pending
                self._by_tag.pop(tag, None)
        return pending

    def dealer_wait(self, pending: DealerPending, timeout: float) -> Any:
        """The request's final answer, waiting up to ``timeout`` s; None when none came (lost)."""
        try:
            deadline = time.monotonic() + timeout
            while not pending.settled:
                try:
                    answer = pending.answers.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    return None
                self._take(pending, answer)
            return pending.final
        finally:
            self._forget(pending)

    def dealer_poll(self, pending: DealerPending) -> tuple[bool, Any]:
        """Without waiting: (True, the final answer) once it came, (True, None) when the link
        dropped meanwhile (lost: reconcile by tag), (False, None) while in flight."""
        while not pending.settled:
            try:
                answer = pending.answers.get_nowait()
            except queue.Empty:
                return False, None
            self._take(pending, answer)
        self._forget(pending)
        return True, pending.final

    @staticmethod
    def _take(pending: DealerPending, answer: Any) -> None:
        if answer is None:  # the connection dropped
            pending.settled = True
        elif int(answer.ResultRetcode) not in verify.IN_FLIGHT_RETCODES:
            pending.settled, pending.final = True, answer

    def _forget(self, pending: DealerPending) -> None:
        with self.lock:
            if pending.request_id is not None and self._waiters.get(pending.request_id) is pending:
                del self._waiters[pending.request_id]
            if self._by_tag.get(pending.tag) is pending:
                del self._by_tag[pending.tag]

    def _forget_stale(self, now: float) -> None:
        """Requests submitted and never awaited again (``dealer_poll`` not called once they
        settled) are forgotten after twice the answer timeout."""
        stale = now - 2 * self.answer_timeout
        for request_id in [k for k, pending in self._waiters.items() if pending.sent_at < stale]:
            del self._waiters[request_id]
        for tag in [k for k, pending in self._by_tag.items() if pending.sent_at < stale]:
            del self._by_tag[tag]

    def _answered(self, answer: Any) -> None:
        """On the API's thread: wake the waiter of ``answer`` (by id, else by tag)."""
        waiter = self._waiters.get(int(getattr(answer, "ID", 0) or 0))
        if waiter is None:
            waiter = self._by_tag.get(str(getattr(answer, "Comment", "")))
        if waiter is not None:
            waiter.answers.put(answer)

    def _fail_waiters(self) -> None:
        for waiter in [*self._waiters.values(), *self._by_tag.values()]:
            waiter.answers.put(None)

    # --- the dispatcher ---------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        while not self._closed.is_set():
            kind, args = self._events.get()
            if kind == "closed":
                if self._after_work is not None:
                    self._after_work()
                return
            try:
                if kind == "disconnect":
                    if self.connected:  # tell the listeners first: they stop trusting their state
                        for listener in list(self._listeners):
                            listener.on_event("disconnect", ())
                    self._reconnect()
                elif kind == "reconnect":
                    self._reconnect(dropped=False)
                elif kind == "resync":
                    for listener in list(self._listeners):
                        listener.on_resync(self)
                elif kind == "call":
                    args[0]()
                elif kind != "connect":
                    for listener in list(self._listeners):
                        listener.on_event(kind, args)
            except Exception:
                log.exception("manager event %s failed in a listener", kind)
            if self._tend is not None:
                self._tend()

    def _reconnect(self, *, dropped: bool = True) -> None:
        """Connect again, with backoff, until connected or closed; ``dropped``: after a drop."""
        if dropped:
            with self.lock:
                if not self.connected:
                    return
                self.connected = False
                self.drops += 1
                self.last_error = (10, "the connection dropped; reconnecting")
            self._fail_waiters()
        attempt = 0
        while not self._closed.is_set():
            try:
                with self.lock:
                    if self.connected:
                        return
                    self._connect()
                log.warning("manager connection to %s restored after a drop", self.server)
                return
            except GatewayUnavailable as exc:
                self.last_error = (exc.code or 0, exc.message)
                delay = verify.RECONNECT_BACKOFF_SECONDS[min(attempt, len(verify.RECONNECT_BACKOFF_SECONDS) - 1)]
                attempt += 1
                if self._closed.wait(delay):
                    return
