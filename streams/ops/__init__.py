"""What operating any retrostitch process needs: its status server, counters, logs, the
topics it reads and writes, and replay positions. Used by the worker and the connectors
alike; imports only ``streams.core`` and the settings.
"""
