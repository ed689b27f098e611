"""One module per area of the window; ``PAGES`` fixes their order in the sidebar."""
from .audit import AuditPage
from .base import Page
from .charts import ChartsPage
from .duplicates import DuplicatesPage
from .failed import FailedPage
from .notifications import NotificationsPage
from .overview import OverviewPage

PAGES: tuple[type[Page], ...] = (OverviewPage, NotificationsPage, DuplicatesPage, FailedPage,
                                 ChartsPage, AuditPage)

__all__ = ["PAGES", "Page"]
