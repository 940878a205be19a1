"""Processes layer: the engine, a lean process that runs work in a persistent namespace."""
