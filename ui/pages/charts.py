from .base import Page


class ChartsPage(Page):
    key = "charts"
    title = "Charts"
    subtitle = "Latency, throughput, failures and duplicates over time, for managers and for post-mortems."
    icon_name = "charts"
    planned = [
        "Dispatch latency percentiles (p50, p95, p99) per minute over the chosen range.",
        "Throughput per source and failures per hour, live while the page is open.",
        "Duplicates per day by kind, to see whether a fix held.",
    ]
