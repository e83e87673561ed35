"""A free TCP port on 127.0.0.1, for a server the caller starts next."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the kernel had free a moment ago (bound to 127.0.0.1:0, then released).

    Another process could take it before the caller binds it; servers that can listen on
    an already-bound socket (uvicorn's ``sockets=``) should bind their own instead.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
