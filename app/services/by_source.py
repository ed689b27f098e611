"""Each source's service record, looked up by name: a new source adds its module and one line here."""
from __future__ import annotations

from .. import registry
from . import cart, dispatch, orders
from .hooks import SourceActions

_ACTIONS: dict[str, SourceActions] = {a.source.name: a for a in (dispatch.ACTIONS, cart.ACTIONS, orders.ACTIONS)}
assert set(_ACTIONS) == set(registry.NAMES), "every source in the registry has its services"


def actions_for(name: str) -> SourceActions:
    """The services of source ``name``; an unknown name is one sentence listing the known ones."""
    return _ACTIONS[registry.source(name).name]
