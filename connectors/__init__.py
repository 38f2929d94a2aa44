"""Warehouse connectors: consumer groups on the sink topic, one module per warehouse.

``base`` is the warehouse seam, ``runner`` the consumer loop every connector runs,
``rows`` turns sink records into rows (pure), ``errors`` tells transient from permanent
failures. Connectors read ``streams.core`` (the sink record's contract), the settings and
``streams.ops``, never the worker.
"""
