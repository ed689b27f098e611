"""Fault injection points for the hardening tests.

``NC_FAULT=<point>:<what>`` makes the named point misbehave in this process:
``sleep=SECONDS`` (so a test can SIGKILL the process mid-transaction),
``raise`` (an exception at that point). With ``NC_FAULT_REACHED=FILE`` a
point that fires first writes FILE, so a test knows where the process is.
Unset, a fault point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import time


def fault_point(name: str) -> None:
    spec = os.environ.get("NC_FAULT")
    if not spec:
        return
    for part in spec.split(","):
        point, _, what = part.partition(":")
        if point != name:
            continue
        reached = os.environ.get("NC_FAULT_REACHED")
        if reached:
            with open(reached, "w", encoding="utf-8") as fh:
                fh.write(name)
        if what.startswith("sleep="):
            time.sleep(float(what.split("=", 1)[1]))
        elif what == "raise":
            raise RuntimeError(f"fault injected at {name}")
