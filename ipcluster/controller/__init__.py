"""Processes layer: the controller, one process that routes work from clients to engines."""
