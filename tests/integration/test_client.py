"""The client SDK's two producers: ordinary submissions share requests, urgent ones leave at once
through a producer of their own, and ``flush`` waits for both."""

import pytest

from shunter.connectors.client import ShunterClient
from shunter.streams.reader import read_records
from shunter.streams.topics import TopicNames

pytestmark = pytest.mark.integration


def test_urgent_submissions_go_through_a_producer_of_their_own_and_flush_delivers_both(settings):
    client = ShunterClient(settings)
    ordinary = client.submit("classification")
    assert client._urgent is None, "no second producer until something urgent is submitted"
    urgent = {client.submit("classification", priority="critical"), client.submit("classification", priority="high")}
    assert client._urgent is not None
    client.flush(timeout=30)
    assert len(client._producer) == 0 and len(client._urgent) == 0, "flush waited for both producers"
    names = TopicNames(settings)
    assert [r["task_id"] for _, r in read_records(settings, names.tasks)] == [ordinary]
    assert {r["task_id"] for _, r in read_records(settings, names.submit_topic("default", urgent=True))} == urgent
