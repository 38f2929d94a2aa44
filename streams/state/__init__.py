"""State behind a seam: the store protocol, one batch's pending changes, the key layout.

``store`` is the protocol (and an in-memory store), ``rocks`` the RocksDB adapter, the
only module here that loads RocksDB. ``partition`` and ``claims`` are the two states a
batch reads and changes (stitching, the merge limit), both through ``pending``; ``keys``
lays them out in bytes and ``retention`` bounds them. Imports only ``streams.core``.
"""
