"""Warehouse connectors: consumers of the sink topic (see issue 3)."""
