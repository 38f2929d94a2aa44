"""The pure core: what an event means and what to emit for it.

The stitching rules (``rules``), the sink record every connector reads (``record``), JSON
pointers, the control commands, the merge limit's messages, time as records carry it, and
the error hierarchy. No module here imports anything else of retrostitch, reads a clock,
a disk or the network, or loads a Kafka client, Faust, RocksDB or a database driver
(import-linter's contracts in ``pyproject.toml`` and ``tests/unit/test_purity.py``).
"""
