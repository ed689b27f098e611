from .base import Page


class DuplicatesPage(Page):
    key = "duplicates"
    title = "Duplicates"
    subtitle = "Groups of notifications that reached someone more than once, with the evidence side by side."
    icon_name = "duplicates"
    planned = [
        "Cart: a second sent email for the same user and cart within 24 hours.",
        "Dispatch: the same event (user, type, issue, comment, actor) under different dispatch ids, "
        "including legacy rows without one.",
        "Orders: more than one admin email for the same order and stage.",
        "Clean-up of a group for operators and admins, archived first and undoable.",
    ]
