"""The exception base of Shunter. Each area subclasses it in its own module."""


class ShunterError(Exception):
    """Base of every error Shunter raises on purpose. Messages say what was wrong and what to do."""


class PolicyError(ShunterError):
    """A policy document or strategy is invalid."""
