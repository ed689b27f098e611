"""Each source's read record, looked up by name: a new source adds its module and one line here."""
from __future__ import annotations

from .. import registry
from . import cart_reads, dispatch_reads, order_reads
from .hooks import SourceReads

# In the order the console lists what it reads of each source (feed types, ...).
ALL_READS: tuple[SourceReads, ...] = (
    dispatch_reads.READS,
    cart_reads.READS,
    order_reads.READS,
)
_READS: dict[str, SourceReads] = {r.source.name: r for r in ALL_READS}
assert set(_READS) == set(registry.NAMES) and len(_READS) == len(ALL_READS), "every source in the registry has its reads"


def reads_for(name: str) -> SourceReads:
    """What the read side reads of source ``name``; an unknown name is one sentence listing the known ones."""
    return _READS[registry.source(name).name]
