"""The guarded service layer: every write to a monitored database goes through here.

Each guard lives in the database (unique key, conditional update, row lock,
version check), never in process memory, so it holds across processes and
workstations. Use cases are plain functions taking simple values and the
Workspace; each runs one transaction per unit of work and rolls back by
default.
"""
