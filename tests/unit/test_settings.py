"""Settings carry credentials without ever showing them."""

import pytest

from shunter.streams.errors import BrokerError
from shunter.streams.settings import Settings
from shunter.streams.topics import TopicNames
from shunter.streams.transport import FETCH_MAX_WAIT_MS


def test_credentials_reach_kafka_settings_but_never_a_repr(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-value\n")
    monkeypatch.setenv("SHUNTER_SASL_USERNAME", "alice")
    monkeypatch.setenv("SHUNTER_SASL_PASSWORD_FILE", str(secret))
    s = Settings.from_env()
    assert s.kafka_config()["sasl.password"] == "s3cr3t-value"
    assert s.kafka_config()["security.protocol"] == "SASL_PLAINTEXT"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s)
    env = s.to_env()
    assert env["SHUNTER_SASL_PASSWORD_FILE"] == str(secret) and "SHUNTER_SASL_PASSWORD" not in env, \
        "children get the file's path, not the secret"


def test_a_username_without_a_password_is_a_clear_error():
    with pytest.raises(BrokerError, match="no password"):
        Settings(sasl_username="alice")


def test_tenants_get_their_own_task_topics_and_names_are_checked():
    s = Settings(tenants=("acme", "globex"))
    names = TopicNames(s)
    assert names.submit_topic("acme") == "shunter.tasks.acme"
    assert "shunter.tasks.globex" in names.all()
    assert TopicNames(Settings()).submit_topic("acme") == "shunter.tasks"
    with pytest.raises(BrokerError, match="not valid"):
        Settings(tenants=("a/b",))


def test_task_topics_name_their_tenant_and_lane_even_for_a_tenant_called_urgent():
    names = TopicNames(Settings(tenants=("urgent", "acme")))
    assert names.lane("shunter.tasks.urgent") == ("urgent", False)
    assert names.lane("shunter.tasks.urgent.urgent") == ("urgent", True)
    assert names.lane("shunter.tasks.acme.urgent") == ("acme", True)
    assert names.lane("shunter.tasks") == (None, False)
    plain = TopicNames(Settings())
    assert plain.lane("shunter.tasks.urgent") == (None, True) and plain.lane("shunter.heartbeats") == (None, False)
    assert plain.submit_topic("x", urgent=True) == "shunter.tasks.urgent"


def test_faust_files_go_under_the_state_directory_not_the_current_one(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    from shunter.streams.app import create_app

    app, _, _ = create_app(Settings(app_id="shunter-datadir-probe"))
    assert app.conf.datadir == tmp_path / "shunter" / "faust" / "shunter-datadir-probe"
    assert (tmp_path / "shunter" / "faust").is_dir(), "Faust creates only the last level itself"
    assert Settings(datadir=str(tmp_path / "srv" / "data")).faust_datadir() == str(tmp_path / "srv" / "data")



@pytest.mark.parametrize("task_lane, wait_ms", [(False, FETCH_MAX_WAIT_MS), (True, 1500)])
def test_the_consumer_holds_an_empty_fetch_for_milliseconds_only_while_it_reads_the_agents_input(task_lane, wait_ms):
    """Built through Shunter's own Faust transport (streams/transport.py). Where the agent reads
    the task topics a held fetch delays them: milliseconds, not Faust's 1,500. Where the task
    lane reads them, this consumer fetches only Faust's own reads, and Faust's choice stands."""
    import asyncio

    from shunter.streams.app import create_app

    app, _, _ = create_app(Settings(app_id="shunter-fetch-probe", bootstrap_servers="localhost:1",
                                    task_lane=task_lane))

    async def build() -> int:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(build()) == wait_ms
    assert FETCH_MAX_WAIT_MS < 100


def test_the_event_loops_cpu_is_read_handed_to_children_and_checked(monkeypatch):
    assert Settings.from_env().loop_cpu is None and Settings().to_env()["SHUNTER_LOOP_CPU"] == ""
    monkeypatch.setenv("SHUNTER_LOOP_CPU", "1")
    s = Settings.from_env()
    assert s.loop_cpu == 1 and s.to_env()["SHUNTER_LOOP_CPU"] == "1"
    monkeypatch.setenv("SHUNTER_LOOP_CPU", "first")
    with pytest.raises(BrokerError, match="SHUNTER_LOOP_CPU must be a CPU number, got 'first'"):
        Settings.from_env()
    with pytest.raises(BrokerError, match="SHUNTER_LOOP_CPU must be a CPU number .0 or more., got -1"):
        Settings(loop_cpu=-1)
