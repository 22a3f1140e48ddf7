"""Errors of the streaming edge: broker, codec, topics."""

from shunter.policies.errors import ShunterError


class BrokerError(ShunterError):
    """The Kafka broker could not be started, reached or configured."""


class CodecError(ShunterError):
    """Bytes could not be decoded as a Shunter message, or a record does not fit its schema."""
