"""Canonical symbol names and each trade server's own (``EURUSD`` ↔ ``EURUSD.m``).

Brokers list one instrument under different names on different servers — a suffix (``.m``,
``m``, ``.pro``, ``-ECN``), sometimes a prefix (``#US30``), sometimes another name altogether
(``US30`` ↔ ``DJ30.cash``) — and a server knows only its own names: ``symbol_info("EURUSD")`` is
``None`` where the server lists ``EURUSD.m``. Laravel always speaks the canonical name. The
adapter sends the server's name in every request and reports the canonical name in everything
it reads back (symbols, positions, orders, deals, results), so commands, reconciliation by tag
and the risk monitor never see a broker's name.

How a terminal's servers name symbols is configured on the terminal (``SymbolNaming``: a prefix,
a suffix, and explicit names for the exceptions; ``manage.py terminals add --symbol-suffix``).
A terminal with none configured learns each server's names when a canonical name is not listed
there: from ``symbols_get()``, the one listed name that is the canonical name plus a suffix or
prefix (``.m``, ``m``, ``-ECN``, ``#``, ...); two candidates (``EURUSD.m`` and ``EURUSD.pro``)
are ambiguous and nothing is learnt — configure the terminal. A suffix or prefix learnt so also
reads back the server's other names that carry it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# A suffix or prefix may be learnt when it is short and cannot be part of a longer symbol name:
# it starts (suffix) or ends (prefix) with a separator, or is lower case (EURUSDm).
_LEARNABLE = re.compile(r"^(?:[._#\-+!$][A-Za-z0-9._\-+]{0,7}|[a-z]{1,4})$")
_LEARNABLE_PREFIX = re.compile(r"^(?:[A-Za-z0-9]{0,7}[._#\-+!$]|[a-z]{1,4})$")
# A canonical name that could not be learnt is looked for again after this long, not at every
# request: the server's list is long, and a symbol it does not trade stays untraded for a while.
RETRY_LEARN_SECONDS = 60.0
_AFFIX = re.compile(r"^[^\s,=]{0,16}$")
_NAME = re.compile(r"^[^\s,=]{1,32}$")


class SymbolNamingError(ValueError):
    """A symbol naming that cannot be configured; the message is one line for an operator."""


@dataclass(frozen=True)
class SymbolNaming:
    """How a terminal's servers name symbols: the canonical name with ``prefix`` and ``suffix``,
    except the ``names`` given explicitly (canonical, broker). Nothing configured: learnt."""

    suffix: str = ""
    prefix: str = ""
    names: tuple[tuple[str, str], ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.suffix or self.prefix or self.names)

    @classmethod
    def parse(cls, *, suffix: str = "", prefix: str = "", names: str = "") -> SymbolNaming:
        """From the terminal's configuration: ``names`` is ``CANONICAL=BROKER[,CANONICAL=BROKER...]``."""
        suffix, prefix = suffix.strip(), prefix.strip()
        for label, affix in (("suffix", suffix), ("prefix", prefix)):
            if not _AFFIX.match(affix):
                raise SymbolNamingError(f"bad symbol {label} {affix!r}: at most 16 characters, no spaces, ',' or '='")
        pairs: dict[str, str] = {}
        brokers: set[str] = set()
        for part in (p.strip() for p in names.split(",")) if names.strip() else ():
            canonical, eq, broker = (x.strip() for x in part.partition("="))
            if not eq or not _NAME.match(canonical) or not _NAME.match(broker):
                raise SymbolNamingError(
                    f"malformed symbol name {part!r}: expected CANONICAL=BROKER[,...], e.g. US30=DJ30.cash"
                )
            if canonical in pairs or broker in brokers:
                raise SymbolNamingError(f"symbol name {part!r} is given twice")
            pairs[canonical] = broker
            brokers.add(broker)
        return cls(suffix=suffix, prefix=prefix, names=tuple(sorted(pairs.items())))

    def describe(self) -> str:
        """One line for ``terminals list`` and the panel."""
        if not self.configured:
            return "learnt"
        parts = []
        if self.prefix or self.suffix:
            parts.append(f"{self.prefix}SYMBOL{self.suffix}")
        parts.extend(f"{canonical}={broker}" for canonical, broker in self.names)
        return ", ".join(parts)

    def names_text(self) -> str:
        return ",".join(f"{canonical}={broker}" for canonical, broker in self.names)


def learnable(canonical: str, listed: str) -> tuple[str, str] | None:
    """The (prefix, suffix) that makes ``listed`` of ``canonical``, when it may be learnt."""
    if listed == canonical:
        return None
    if listed.startswith(canonical) and _LEARNABLE.match(listed[len(canonical) :]):
        return "", listed[len(canonical) :]
    if listed.endswith(canonical) and _LEARNABLE_PREFIX.match(listed[: -len(canonical)]):
        return listed[: -len(canonical)], ""
    return None


class SymbolBook:
    """One terminal's canonical ↔ broker names, per trade server (its configuration, and what it
    learnt). Thread-safe; the adapter asks it with the terminal's lock held anyway."""

    def __init__(self, naming: SymbolNaming | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.naming = naming or SymbolNaming()
        self._clock = clock
        self._explicit = dict(self.naming.names)
        self._explicit_back = {broker: canonical for canonical, broker in self.naming.names}
        self._lock = threading.Lock()
        # Per server (lower case): canonical -> broker learnt, its inverse, and the affixes learnt.
        self._learnt: dict[str, dict[str, str]] = {}
        self._learnt_back: dict[str, dict[str, str]] = {}
        self._affixes: dict[str, list[tuple[str, str]]] = {}
        # (server, canonical) -> when learning it last failed.
        self._failed: dict[tuple[str, str], float] = {}

    @staticmethod
    def _key(server: str) -> str:
        return server.strip().lower()

    def broker(self, server: str, canonical: str) -> str:
        """The server's name for ``canonical``, as configured or learnt (else the canonical name)."""
        if canonical in self._explicit:
            return self._explicit[canonical]
        if self.naming.prefix or self.naming.suffix:
            return f"{self.naming.prefix}{canonical}{self.naming.suffix}"
        with self._lock:
            return self._learnt.get(self._key(server), {}).get(canonical, canonical)

    def canonical(self, server: str, broker: str) -> str:
        """The canonical name of the server's ``broker`` name ("" stays "": a balance deal)."""
        if not broker:
            return broker
        if broker in self._explicit_back:
            return self._explicit_back[broker]
        prefix, suffix = self.naming.prefix, self.naming.suffix
        if prefix or suffix:
            return _strip(broker, prefix, suffix) or broker
        key = self._key(server)
        with self._lock:
            found = self._learnt_back.get(key, {}).get(broker)
            if found is not None:
                return found
            for learnt_prefix, learnt_suffix in self._affixes.get(key, ()):
                stripped = _strip(broker, learnt_prefix, learnt_suffix)
                if stripped:
                    return stripped
        return broker

    def may_learn(self, server: str, canonical: str) -> bool:
        """Should a canonical name the server does not list be looked for among its symbols?"""
        if self.naming.configured:
            return False
        key = self._key(server)
        with self._lock:
            failed = self._failed.get((key, canonical))
            if failed is not None and self._clock() - failed < RETRY_LEARN_SECONDS:
                return False
            return canonical not in self._learnt.get(key, {})

    def learn(self, server: str, canonical: str, listed: Iterable[str]) -> str | None:
        """Learn the server's name for ``canonical`` from the names it lists (``symbols_get()``):
        the one that is ``canonical`` plus a learnable suffix or prefix; None when there is none,
        or more than one (ambiguous)."""
        candidates = {name: affix for name in listed if (affix := learnable(canonical, name)) is not None}
        key = self._key(server)
        if len(candidates) != 1:
            with self._lock:
                self._failed[(key, canonical)] = self._clock()
            return None
        ((broker, affix),) = candidates.items()
        with self._lock:
            self._learnt.setdefault(key, {})[canonical] = broker
            self._learnt_back.setdefault(key, {})[broker] = canonical
            affixes = self._affixes.setdefault(key, [])
            if affix not in affixes:
                affixes.append(affix)
        return broker


def _strip(broker: str, prefix: str, suffix: str) -> str | None:
    if len(broker) <= len(prefix) + len(suffix) or not broker.startswith(prefix) or not broker.endswith(suffix):
        return None
    return broker[len(prefix) : len(broker) - len(suffix)]


# Renames a server's symbol name to the canonical one (``SymbolBook.canonical`` of one server).
Rename = Callable[[str], str]


def same(name: str) -> str:
    return name
