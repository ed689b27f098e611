"""Notification Console core: configuration, sources, services and read models.

Nothing in this package imports Qt: the GUI, the CLI and the traffic simulator
are three front ends on the same code.
"""
