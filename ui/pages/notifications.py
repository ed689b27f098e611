from .base import Page


class NotificationsPage(Page):
    key = "notifications"
    title = "Notifications"
    subtitle = "Every notification attempt across orders, cart and dispatch, newest first, live."
    icon_name = "notifications"
    planned = [
        "One live list of admin emails (orders), abandonment emails (cart) and in-app dispatches, "
        "appended as they happen without losing your selection or scroll position.",
        "Filters by source, status, time range, user, order, issue or cart, applied in the query.",
        "Latency of each dispatch, and the full record of any row on double-click.",
    ]
