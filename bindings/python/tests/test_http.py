"""The HTTP cloud tier: two instances share a real sync server (datasync-server,
started here on loopback over a temporary directory) and converge."""

import os
import pathlib
import subprocess
import threading

import pytest

import datasync

ROOT = pathlib.Path(__file__).resolve().parents[3]


def server_binary() -> str:
    path = os.environ.get("DATASYNC_SERVER_BIN") or str(ROOT / "target" / "debug" / "datasync-server")
    if not os.path.isfile(path):
        pytest.fail(f"{path} is missing: build it with `cargo build -p datasync-server` (run-tests.sh does)")
    return path


@pytest.fixture
def server(tmp_path):
    """(url, token) of a server that is stopped when the test ends."""
    token = "py-" + os.urandom(12).hex()
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text(f'{{"token": "{token}", "device": "py", "read": ["*"], "write": ["*"]}}\n')
    proc = subprocess.Popen(
        [server_binary(), "--listen", "127.0.0.1:0", "--dir", str(tmp_path / "cloud"), "--tokens", str(tokens)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        first = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(20)
        line = first[0] if first else ""
        assert line.startswith("listening on "), f"the server did not start: {line!r}"
        yield "http://" + line.split("listening on ", 1)[1].strip(), token
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def open_device(url, token):
    return datasync.open(
        "app",
        local=datasync.MemoryTier(),
        cloud=datasync.HttpTier(url, token, connect_timeout=2, read_timeout=5),
        cloud_sync_interval=3600,
        sync_on_open=False,
    )


def test_two_devices_converge_through_a_server(server):
    url, token = server
    with open_device(url, token) as phone, open_device(url, token) as laptop:
        alice = phone.repo("User").save({"name": "Alice"})
        stats = phone.sync_now()
        assert not stats.offline and stats.errors == [], stats
        laptop.sync_now()
        assert laptop.repo("User").get(alice)["name"] == "Alice"

        bob = laptop.repo("User").save({"name": "Bob"})
        laptop.repo("User").save({"id": alice, "name": "Alice L."})
        for _ in range(2):
            laptop.sync_now()
            phone.sync_now()
        for d in (phone, laptop):
            assert d.repo("User").get(alice)["name"] == "Alice L."
            assert d.repo("User").get(bob)["name"] == "Bob"
        assert phone.status.online and laptop.status.online
        assert phone.audit() == [] and laptop.audit() == []


def test_a_bad_token_is_offline_with_a_clear_error(server):
    url, _ = server
    with open_device(url, "not-a-token") as ds:
        ds.repo("User").save({"name": "x"})
        stats = ds.sync_now()
        assert stats.offline
        assert any("the server rejected the token" in e for e in stats.errors), stats.errors
        assert not ds.status.online


def test_a_bad_url_is_an_invalid_config():
    with pytest.raises(datasync.InvalidConfig):
        datasync.open("app", cloud=datasync.HttpTier("ftp://example.test", "t"))
    assert "t0ken" not in repr(datasync.HttpTier("http://127.0.0.1:1", "t0ken"))
