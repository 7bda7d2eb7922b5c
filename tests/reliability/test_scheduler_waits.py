"""``--scheduler``: the address is checked first and every wait has one deadline."""

import contextlib
import io
import socket
import threading
import time

import pytest

from pipelines.cli.main import main
from pipelines.cluster import parse_scheduler_address, probe_scheduler


@contextlib.contextmanager
def _listener(reply=None):
    """A loopback server that accepts, optionally sends ``reply``, and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted, stop = [], threading.Event()

    def serve():
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)
            if reply is not None:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def _error(argv):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    lines = err.getvalue().strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in lines[0], err.getvalue()
    assert len(lines[0]) < 300
    return lines[0]


@pytest.mark.parametrize("command", ["evaluate", "embed"])
def test_silent_listener_is_a_bounded_one_line_error(tmp_path, command):
    argv = {"evaluate": ["evaluate", tmp_path / "no-data", "--out", tmp_path / "o"],
            "embed": ["embed", tmp_path / "e.keras", tmp_path / "no-data", "--out",
                      tmp_path / "e.npy"]}[command]
    with _listener() as address:
        start = time.monotonic()
        line = _error([*argv, "--scheduler", address, "--scheduler-timeout", "1.5"])
        elapsed = time.monotonic() - start
    assert line == (f"triplet: error: --scheduler {address}: no Dask scheduler answered within "
                    "1.5 s (connect, handshake, first reply); check the address or raise "
                    "--scheduler-timeout")
    assert 1.4 < elapsed < 10  # checked first: before the data folder is even looked at


def test_http_server_is_not_a_scheduler(tmp_path):
    reply = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    with _listener(reply) as address:
        line = _error(["evaluate", tmp_path, "--out", tmp_path / "o", "--scheduler", address])
    assert line == (f"triplet: error: --scheduler {address}: the server there does not answer "
                    "like a Dask scheduler (its first message claims 3,543,824,036,068,086,856 "
                    "bytes)")


@pytest.mark.parametrize("address, why", [
    ("notanaddress:xyz", "port 'xyz' is not a number from 1 to 65535"),
    ("notanaddress", "it has no host:port"),
    ("http://h:80", "scheme 'http' is not one of tcp, tls"),
    ("tcp://h:0", "port '0' is not a number from 1 to 65535"),
    ("tcp://:8786", "it has no host:port"),
    ("tcp://a b:8786", "host 'a b' is not a host name or IP address"),
])
def test_bad_addresses_are_refused_before_work(tmp_path, address, why):
    line = _error(["embed", tmp_path / "e.keras", tmp_path, "--out", tmp_path / "e.npy",
                   "--scheduler", address])
    assert line == (f"triplet: error: --scheduler must be an address like "
                    f"tcp://10.0.0.5:8786, got {address!r} ({why})")


def test_parse_and_timeout_checks():
    assert parse_scheduler_address("10.0.0.5:8786") == ("tcp", "10.0.0.5", 8786)
    assert parse_scheduler_address("tls://[::1]:8786") == ("tls", "::1", 8786)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"^--scheduler-timeout must be a positive number "
                           r"of seconds, got "):
            probe_scheduler("tcp://127.0.0.1:1", bad)


def test_nothing_listening_is_one_line():
    with socket.socket() as s:  # a port just freed: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ValueError, match=rf"^--scheduler tcp://127\.0\.0\.1:{port}: cannot "
                       r"connect \(Connection refused\)$"):
        probe_scheduler(f"tcp://127.0.0.1:{port}", 2)


def test_a_real_scheduler_passes_the_probe():
    distributed = pytest.importorskip("distributed")
    from pipelines.cluster import scheduler_client

    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://",
                                  dashboard_address=":0", host="127.0.0.1") as cluster:
        probe_scheduler(cluster.scheduler_address, 10)
        with scheduler_client(cluster.scheduler_address, 10) as client:
            assert client.scheduler_info()["address"] == cluster.scheduler_address
