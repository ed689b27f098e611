from .base import Page


class FailedPage(Page):
    key = "failed"
    title = "Failed & Stuck"
    subtitle = "What did not go out: failed sends, dispatches stuck in pending, stage emails that never left."
    icon_name = "failed"
    planned = [
        "Failed cart emails and dispatches with their error messages, oldest first.",
        "Dispatches pending longer than the stuck threshold, and cart rows past the in-progress window.",
        "Orders whose images arrived with no admin email after the grace period (missed).",
        "Retry, one item or a selection, guarded so two workstations never send the same email twice.",
    ]
