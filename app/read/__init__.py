"""The monitoring read side: read models and the queries that build them (no Qt, no writes
to production tables; the rollups write only the console's own ``nc_`` tables)."""
