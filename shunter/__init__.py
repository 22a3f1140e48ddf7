"""Shunter: an event-driven task scheduler on Kafka.

The code lives in the top-level source folders (``schemas/``, ``streams/``, ``agents/``,
``policies/``, ``connectors/``), installed as ``shunter.<folder>``.
"""

__version__ = "0.1.0"
