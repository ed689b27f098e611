from .base import Page


class AuditPage(Page):
    key = "audit"
    title = "Audit"
    subtitle = "Every action taken from any console: who, when, what, and what came of it."
    icon_name = "audit"
    planned = [
        "Retries and clean-ups with their operator, role, parameters and per-item outcome.",
        "Archived rows of each clean-up, and undo for the ones that can still be restored.",
        "Refused actions too, with the reason (role, conflict, or a concurrent console).",
    ]
