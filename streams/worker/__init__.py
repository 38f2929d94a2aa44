"""The stitcher: a Faust app whose agents take their records a batch at a time.

``app`` wires topics, tables and agents; ``handlers`` is what each agent does with a
batch; ``processor`` runs a batch through the core against state, without Kafka;
``checkpoint`` orders output, changelog, RocksDB and offsets; ``feed`` and ``transport``
bring fetched records to the agents (the transport is the one module that touches
Faust's internals); ``outbox`` produces; ``metrics`` and ``gauges`` measure.
"""
