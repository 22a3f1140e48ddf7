"""The scheduler's event loop (connectors/cli.py, ``use_event_loop``)."""

from __future__ import annotations

import asyncio

import pytest

from shunter.connectors.cli import use_event_loop


def _running_loop_module() -> str:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    return asyncio.run(which())


def test_the_scheduler_runs_on_uvloop_unless_told_asyncio():
    try:
        use_event_loop("uvloop")
        assert _running_loop_module().startswith("uvloop")
        use_event_loop("asyncio")
        assert _running_loop_module().startswith("asyncio")
    finally:
        asyncio.set_event_loop_policy(None)


def test_shunter_event_loop_chooses_when_no_name_is_given(monkeypatch):
    try:
        monkeypatch.delenv("SHUNTER_EVENT_LOOP", raising=False)
        use_event_loop()
        assert _running_loop_module().startswith("uvloop"), "uvloop by default"
        monkeypatch.setenv("SHUNTER_EVENT_LOOP", "asyncio")
        use_event_loop()
        assert _running_loop_module().startswith("asyncio")
    finally:
        asyncio.set_event_loop_policy(None)


def test_an_unknown_event_loop_is_a_clear_error():
    with pytest.raises(SystemExit, match="SHUNTER_EVENT_LOOP='tokio'"):
        use_event_loop("tokio")
