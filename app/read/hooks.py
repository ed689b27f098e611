"""What the read side reads of a source, as one record: ``SourceReads``.

The registry (``app.registry``) states what the console knows of a source;
this record adds how the read side reads it, so the generic read modules
(``failures``, ...) look a source's readers up
(``app.read.by_source.reads_for``) instead of naming sources. Each per-source
read module (``app.read.dispatch_reads``, ``.cart_reads``, ``.order_reads``)
builds its own record as ``READS``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import registry
from .failed_parts import FailedList


@dataclass(frozen=True)
class SourceReads:
    source: registry.Source
    failed_list: FailedList               # the Failed & Stuck list: the source's failed, stuck or missed items
