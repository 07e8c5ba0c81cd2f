"""Settings from the environment, the cached dependency, and the app factory."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from service_helpers import ThreadServer

from service.app import create_app
from service.cli import serve
from service.settings import Settings, get_settings


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REPLAY_STORE", str(tmp_path))
    monkeypatch.setenv("REPLAY_PORT", "9001")
    monkeypatch.setenv("REPLAY_TOKEN", "abc")
    monkeypatch.setenv("REPLAY_MAX_BATCH_SIZE", "16")
    s = Settings()  # type: ignore[call-arg]
    assert (s.store, s.host, s.port, s.token_value(), s.max_batch_size) == (
        str(tmp_path),
        "127.0.0.1",
        9001,
        "abc",
        16,
    )
    assert "abc" not in repr(s)  # the token is a secret
    monkeypatch.setenv("REPLAY_TOKEN", "")
    assert Settings().token is None  # type: ignore[call-arg]


def test_store_urls_are_kept_as_they_are() -> None:
    assert Settings(store="s3://bucket/prefix").store == "s3://bucket/prefix"
    assert Settings(store=Path("/data/x")).store == "/data/x"


def test_get_settings_is_cached_and_overridable(
    monkeypatch: pytest.MonkeyPatch, served_store: Path
) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("REPLAY_STORE", str(served_store))
    try:
        assert get_settings() is get_settings()
        app = create_app()  # from the environment
        with ThreadServer(app=app) as server:
            assert httpx.get(f"{server.url}/v1/health").json()["races"] == 3
            assert httpx.get(f"{server.url}/v1/stats").status_code == 200
            # tests (and embedders) override the dependency
            guarded = Settings(store=served_store, token="t")
            app.dependency_overrides[get_settings] = lambda: guarded
            assert httpx.get(f"{server.url}/v1/stats").status_code == 401
    finally:
        get_settings.cache_clear()


def test_serve_help() -> None:
    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0
    assert "Serve the replay store STORE" in result.output
    assert "--allow-public" in result.output
