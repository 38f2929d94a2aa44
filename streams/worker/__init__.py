"""The stitcher: a Faust app whose agents take their records a batch at a time.

``app`` wires topics, tables and agents; ``handlers`` runs each agent's batch through its
flow of ``streams.pipeline`` and emits what it gives; ``checkpoint`` orders output,
changelog, RocksDB and offsets; ``feed`` and ``transport`` bring fetched records to the
agents; ``tablestore`` and ``recovery`` open, set aside and restore the tables' RocksDB;
``outbox`` produces; ``metrics`` and ``gauges`` measure. This is the one package that
imports Faust, mode and aiokafka; each module that touches a private name of theirs lists
it, with why, in its docstring (``tests/unit/worker/test_private_names.py`` checks).
"""
