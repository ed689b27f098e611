"""The guard primitives every service runs its database work through.

* ``guarded(source, fn)``: ``fn`` (one or more transactions of its own) with
  deadlock and lock-wait retries (full jitter, ``with_retry``); a database
  error that is left becomes the operator's error in one sentence — the
  database user's missing privilege a permission error (exit 3), anything
  else a failed operation.
* ``quietly(fn)``: bookkeeping after an error (mark a row failed, give a
  lease back, record an action's failure) that must never hide the error the
  operator has to see; what it cannot do expires or is retried by itself.
* ``mongo_step(what, fn)``: the order store's counterpart of ``guarded``;
  ``order_db(store)`` its database, typed as the pymongo API it speaks.
* ``send_budget(window, claimed)``: how long a send holding a claim or lease
  may take, so it ends before anyone may take the claim over.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..errors import ConsoleError, OperationFailed, PermissionDenied
from ..sources import describe_db_error
from ..sqlutil import is_permission_denied, with_retry

if TYPE_CHECKING:
    from pymongo.database import Database

    from ..sources import OrderStore

T = TypeVar("T")
P = ParamSpec("P")


def db_failure(source: str, exc: BaseException) -> ConsoleError:
    """A database error as the operator's error: the database user's missing
    privilege is a permission error (exit 3), anything else a failed operation."""
    message = describe_db_error(source, exc)
    return PermissionDenied(message) if is_permission_denied(exc) else OperationFailed(message)


def guarded(source: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` with deadlock retries; a database error becomes one sentence."""
    try:
        return with_retry(fn)
    except (DBAPIError, SQLAlchemyError) as exc:
        raise db_failure(source, exc) from None


def quietly(fn: Callable[[], object]) -> None:
    """Run bookkeeping whose failure must not replace the error being reported."""
    try:
        fn()
    except Exception:  # noqa: BLE001 - see the docstring: the caller's error is the one to show
        pass


def mongo_step(what: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """One order-store step, ``fn(*args, **kwargs)``; a driver error becomes one sentence naming ``what``."""
    from pymongo.errors import PyMongoError
    try:
        return fn(*args, **kwargs)
    except PyMongoError as exc:
        first = str(exc).split("\n")[0]
        raise OperationFailed(f"The orders database failed while {what}: {first}.") from None


def order_db(store: OrderStore) -> Database[dict[str, Any]]:
    """The order store's database, typed as the pymongo API every caller uses."""
    # OrderStore.db is untyped (Any, app.sources): a pymongo Database, or mongomock's behind the
    # store's lock, which follows the same API (its ``find`` returns a list: iterate, pass sort and
    # limit as arguments). Typed as pymongo's, the calls here are checked; documents stay dict[str, Any].
    return cast("Database[dict[str, Any]]", store.db)


def send_budget(window: dt.timedelta, claimed: float) -> float:
    """Seconds a send may take: half the claim's window, less what passed since the claim
    (``time.monotonic()`` when it was taken).

    After the window another console may take the claim over and send again,
    so the transport (retries, waits and socket timeouts included) must be
    done well before.
    """
    return window.total_seconds() / 2 - (time.monotonic() - claimed)
