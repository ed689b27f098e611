"""Helpers the concurrency tests share."""
from __future__ import annotations

import threading


def attempts_together(fn, events: int, attempts: int) -> None:
    """Run ``fn(event, attempt, barrier)`` for each event's attempts on their own threads, released together."""
    for event in range(events):
        barrier = threading.Barrier(attempts)
        errors = []

        def run(attempt, event=event, barrier=barrier, errors=errors):
            try:
                fn(event, attempt, barrier)
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(a,)) for a in range(attempts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
