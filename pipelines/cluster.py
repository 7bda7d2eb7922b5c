"""A Dask scheduler named by the user: its address checked first, every wait bounded.

Dask's own connect timeout does not cover the handshake: a listener that accepts and
never answers holds ``Client(...)`` for ever, and one that answers anything but Dask's
framing (an HTTP server) makes Dask allocate the size its first eight bytes claim.
:func:`probe_scheduler` therefore reads the scheduler's handshake itself, with one deadline
for connect + handshake, before :func:`scheduler_client` lets Dask connect. Errors are one
``ValueError`` line naming the address.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time

#: Seconds to connect to a scheduler and get its first reply (``--scheduler-timeout``).
DEFAULT_SCHEDULER_TIMEOUT = 30.0
_SCHEMES = ("tcp", "tls")
# A scheduler's handshake is a few hundred bytes of msgpack; anything larger is not Dask.
_MAX_HANDSHAKE_BYTES = 1 << 16


def _bad_address(address, why):
    return ValueError(f"--scheduler must be an address like tcp://10.0.0.5:8786, got "
                      f"{address!r} ({why})")


def parse_scheduler_address(address):
    """Split a scheduler address into ``(scheme, host, port)``, checking each part.

    Parameters
    ----------
    address : str
        ``tcp://host:port``, ``tls://host:port`` or ``host:port`` (tcp); IPv6 hosts in
        brackets (``tcp://[::1]:8786``).

    Returns
    -------
    tuple of (str, str, int)

    Raises
    ------
    ValueError
        Naming the address and what is wrong with it.
    """
    if not isinstance(address, str) or not address.strip():
        raise _bad_address(address, "it is empty")
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme not in _SCHEMES:
        raise _bad_address(address, f"scheme {scheme!r} is not one of {', '.join(_SCHEMES)}")
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise _bad_address(address, "it has no host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _bad_address(address, f"port {port!r} is not a number from 1 to 65535")
    if not host or any(c.isspace() or c in "/[]" for c in host):
        raise _bad_address(address, f"host {host!r} is not a host name or IP address")
    return scheme, host, int(port)


def check_scheduler_timeout(timeout):
    """``timeout`` as float seconds if it is finite and positive, else a ValueError.

    Parameters
    ----------
    timeout : float

    Returns
    -------
    float
    """
    value = float(timeout)
    if not 0 < value < float("inf"):
        raise ValueError(f"--scheduler-timeout must be a positive number of seconds, "
                         f"got {timeout!r}")
    return value


def _unanswered(address, timeout, what):
    return ValueError(f"--scheduler {address}: {what} within {timeout:g} s (connect, "
                      "handshake, first reply); check the address or raise "
                      "--scheduler-timeout")


def _read_exactly(sock, n, deadline):
    data = b""
    while len(data) < n:
        sock.settimeout(max(deadline - time.monotonic(), 1e-3))
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("the connection was closed")
        data += chunk
    return data


def probe_scheduler(address, timeout=DEFAULT_SCHEDULER_TIMEOUT):
    """Connect to ``address`` and read the scheduler's handshake, all within ``timeout``.

    For ``tls://`` addresses only the connection is checked (the handshake is encrypted).

    Parameters
    ----------
    address : str
        The scheduler (see :func:`parse_scheduler_address`).
    timeout : float, default=30
        Seconds for connect + handshake together.

    Raises
    ------
    ValueError
        One line naming the address: bad address, nothing listening, no answer in time,
        or an answer that is not a Dask handshake.
    """
    scheme, host, port = parse_scheduler_address(address)
    timeout = check_scheduler_timeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if scheme != "tcp":
                return
            (size,) = struct.unpack("<Q", _read_exactly(sock, 8, deadline))
            if not 0 < size <= _MAX_HANDSHAKE_BYTES:
                raise ValueError(f"--scheduler {address}: the server there does not answer "
                                 "like a Dask scheduler (its first message claims "
                                 f"{size:,} bytes)")
            _read_exactly(sock, size, deadline)
    except TimeoutError:
        raise _unanswered(address, timeout, "no Dask scheduler answered") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ValueError(f"--scheduler {address}: cannot connect ({reason})") from exc


@contextlib.contextmanager
def scheduler_client(address, timeout=DEFAULT_SCHEDULER_TIMEOUT):
    """A ``distributed.Client`` of the scheduler at ``address``, probed first.

    Parameters
    ----------
    address : str
        The scheduler (see :func:`parse_scheduler_address`).
    timeout : float, default=30
        Seconds for the probe, and Dask's connect timeout after it.

    Yields
    ------
    distributed.Client

    Raises
    ------
    ValueError
        If Dask is missing, or as :func:`probe_scheduler`.
    """
    try:
        from distributed import Client
    except ImportError as exc:
        raise ValueError("--scheduler needs Dask: pip install 'triplet-embeddings[dask]'"
                         ) from exc
    probe_scheduler(address, timeout)
    try:
        client = Client(address, timeout=f"{check_scheduler_timeout(timeout)}s")
    except (OSError, TimeoutError) as exc:
        raise _unanswered(address, timeout, "Dask could not connect") from exc
    with client:
        yield client
