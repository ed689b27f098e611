"""The three monitored sources: what the console knows of each, stated once.

Every caller that needs to name, list, label or parse something per source
looks it up here (``source(name)``, ``SOURCES``) instead of comparing names:
the store kind (SQL or the order store), how an item is named and parsed,
which failed-list kinds a retry may pick up, the built-in duplicate rule.
This module imports nothing of the console but its errors, so every layer
(config, read side, services, simulator, window) may use it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

# Item ids are the log rows' BIGINT keys or the orders' integer ids.
_ID_MAX = 2 ** 63


@dataclass(frozen=True)
class Source:
    name: str
    label: str                      # what the window and reports call it
    store: str                      # "sql" (MySQL/MariaDB, PostgreSQL, SQLite) or "mongo" (the order store)
    item_noun: str                  # how one retryable item is named: "order id", "cart row id", ...
    retryable_kinds: tuple[str, ...]   # failed-list kinds a retry --all picks up
    builtin_rule: str               # the name of its built-in duplicate rule
    sends_mail: bool                # a retry hands emails to the mail transport

    @property
    def is_sql(self) -> bool:
        return self.store == "sql"

    def parse_item_id(self, raw) -> int:
        """A retryable item's id: a positive whole number, or one clear sentence."""
        text = str(raw).strip()
        if not text.isdigit() or not 0 < int(text) < _ID_MAX:
            raise UsageError(f"The {self.item_noun} {raw!r} is not a positive whole number.")
        return int(text)


SOURCES: tuple[Source, ...] = (
    Source("orders", "Orders", "mongo", "order id", ("missed",), "order_email_per_event", sends_mail=True),
    Source("cart", "Cart", "sql", "cart row id", ("failed", "stuck"), "cart_sent_within_window", sends_mail=True),
    Source("dispatch", "Dispatch", "sql", "dispatch row id", ("failed", "stuck"), "dispatch_same_event",
           sends_mail=False),
)
NAMES: tuple[str, ...] = tuple(s.name for s in SOURCES)
SQL_NAMES: tuple[str, ...] = tuple(s.name for s in SOURCES if s.is_sql)
_BY_NAME = {s.name: s for s in SOURCES}


def unknown_source(name) -> UsageError:
    return UsageError(f"Unknown source '{name}': choose {', '.join(NAMES[:-1])} or {NAMES[-1]}.")


def source(name: str) -> Source:
    """The source called ``name``; an unknown name is one sentence listing the known ones."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise unknown_source(name) from None
