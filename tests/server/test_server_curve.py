"""CURVE authentication: key files, known clients served, unknown and keyless clients refused."""

from __future__ import annotations

import logging
import stat

import pytest
from server_support import gated_tiny_pipeline, running_server

from seethrough.cli import main
from seethrough_core.client import SeeThroughClient, ServerUnavailableError
from seethrough_core.keys import ClientKeys, KeyFileError, create_key_pair, read_key_pair

TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """server.key(_secret), a known client 'studio' (in clients/) and an unknown one 'stranger'."""
    root = tmp_path_factory.mktemp("keys")
    create_key_pair("server", root)
    create_key_pair("studio", root / "clients")
    create_key_pair("stranger", root / "elsewhere")
    return root


@pytest.fixture(scope="module")
def server(keys):
    config = {"server_key": str(keys / "server.key_secret"), "client_keys": str(keys / "clients")}
    with running_server(gated_tiny_pipeline(), **config) as server:
        yield server


def client_keys(keys, name: str, folder: str) -> ClientKeys:
    return ClientKeys.from_files(keys / "server.key", keys / folder / f"{name}.key_secret")


def test_keys_create_writes_an_owner_only_secret_and_never_overwrites(tmp_path, capsys):
    assert main(["keys", "create", "gpu", "--dir", str(tmp_path)]) == 0
    assert stat.S_IMODE((tmp_path / "gpu.key_secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "gpu.key").stat().st_mode) == 0o644
    before = (tmp_path / "gpu.key_secret").read_bytes()
    assert main(["keys", "create", "gpu", "--dir", str(tmp_path)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert (tmp_path / "gpu.key_secret").read_bytes() == before
    (tmp_path / "gpu.key_secret").chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key_pair(tmp_path / "gpu.key_secret")
    with pytest.raises(KeyFileError, match="only a public key"):
        read_key_pair(tmp_path / "gpu.key")


def test_a_known_client_is_served(server, keys):
    with SeeThroughClient(server.endpoint, TIMEOUT_S, keys=client_keys(keys, "studio", "clients")) as client:
        assert client.info().state == "ready"


def test_an_unknown_key_is_refused_with_a_clear_message_and_logged_once(server, keys, caplog):
    caplog.set_level(logging.WARNING, logger="inference_server.auth")
    stranger = client_keys(keys, "stranger", "elsewhere")
    for _ in range(2):
        with SeeThroughClient(server.endpoint, TIMEOUT_S, keys=stranger) as client:
            with pytest.raises(ServerUnavailableError, match="refused this client's key"):
                client.info()
    refusals = [r for r in caplog.records if "refused a client with public key" in r.getMessage()]
    assert len(refusals) == 1


def test_a_client_without_keys_gets_nothing_and_is_told_why(server):
    with SeeThroughClient(server.endpoint, TIMEOUT_S) as client:
        with pytest.raises(ServerUnavailableError, match="requires CURVE keys"):
            client.info()


def test_a_wrong_server_key_fails_within_the_timeout(server, keys):
    wrong = ClientKeys.from_files(keys / "elsewhere" / "stranger.key", keys / "clients" / "studio.key_secret")
    with SeeThroughClient(server.endpoint, TIMEOUT_S, keys=wrong) as client:
        with pytest.raises(ServerUnavailableError, match=r"could not deliver"):
            client.info()


def test_with_keys_an_address_other_machines_reach_needs_no_allow_remote(keys):
    config = {
        "server_key": str(keys / "server.key_secret"),
        "client_keys": str(keys / "clients"),
        "endpoint": "tcp://0.0.0.0:*",
    }
    with running_server(gated_tiny_pipeline(), **config) as server:
        port = server.endpoint.rsplit(":", 1)[1]
        studio = client_keys(keys, "studio", "clients")
        with SeeThroughClient(f"tcp://127.0.0.1:{port}", TIMEOUT_S, keys=studio) as client:
            assert client.info().state == "ready"
