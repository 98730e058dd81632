import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_non_loopback_hosts_are_blocked() -> None:
    """The test config refuses connections to anything but loopback."""
    with pytest.warns(UserWarning, match="10.255.255.1"), pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("10.255.255.1", 80), timeout=0.5)
