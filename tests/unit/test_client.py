"""The client SDK's two producers: ordinary submissions share requests, urgent ones leave at once."""

import pytest

from shunter.connectors.client import ShunterClient
from shunter.streams.settings import Settings


def test_urgent_submissions_get_a_producer_of_their_own_and_flush_waits_for_both():
    client = ShunterClient(Settings(bootstrap_servers="127.0.0.1:1"))  # nothing listens there
    client.submit("classification")
    assert client._urgent is None, "no second producer until something urgent is submitted"
    client.submit("classification", priority="critical")
    client.submit("classification", priority="high")
    assert client._urgent is not None and len(client._urgent) == 2 and len(client._producer) == 1
    with pytest.raises(TimeoutError, match="^3 message"):
        client.flush(timeout=0.3)
