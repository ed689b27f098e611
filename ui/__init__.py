"""The Qt front end: windows, pages, table models, charts and background tasks."""
