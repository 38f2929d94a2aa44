"""Warehouse connectors: consumer groups on the sink topic, one package per warehouse.

``base`` is the warehouse seam; ``registry`` lists every warehouse, one line each (its
package declares its settings section, CLI name and status port; its ``warehouse`` module is
the connector with its driver, imported only when that connector starts); ``runner`` is
the consumer loop every connector runs, made of small pieces: ``batch`` (a batch and the
order it lands in), ``backpressure`` (retrying, paused, while a warehouse is away),
``deadletters`` and ``lag``. ``rows`` turns sink records into rows (pure), ``errors``
tells transient from permanent failures. Connectors read ``streams.core`` (the sink
record's contract), the settings and ``streams.ops``, never the worker.
"""
