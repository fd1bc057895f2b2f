"""systemd's readiness protocol (sd_notify) without a dependency.

A service started with ``Type=notify`` tells systemd it is ready by sending one datagram
``READY=1`` to the Unix socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for
the abstract namespace); ``STATUS=...`` sets the line ``systemctl status`` shows and
``STOPPING=1`` says the service is shutting down (see sd_notify(3)). Outside systemd
the variable is not set and :func:`notify` does nothing, so the collectors call it
unconditionally: ``hep`` once every listener is bound and its workers run, ``live``
once the capture is open.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["notify", "ready", "stopping"]

log = logging.getLogger("sipcaptool.control")


def notify(*fields: str, env: dict[str, str] | None = None) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``), one per line, to
    ``$NOTIFY_SOCKET``. True when sent; False when there is no such socket (not run by
    systemd) or it cannot be reached (logged: the service still runs, systemd will say
    it did not become ready)."""
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not path or not fields:
        return False
    if path.startswith("@"):  # the abstract namespace
        address: str | bytes = b"\0" + path[1:].encode()
    elif path.startswith("/"):
        address = path
    else:  # (vsock addresses, which systemd also knows, are not used here)
        log.warning("NOTIFY_SOCKET %r is not a Unix socket path; readiness not sent", path)
        return False
    data = "\n".join(fields).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(data)
    except OSError as e:
        log.warning("cannot tell systemd (NOTIFY_SOCKET %s): %s", path, e.strerror or e)
        return False
    return True


def ready(status: str = "") -> bool:
    """``READY=1`` (with a ``STATUS=`` line when given) and this process's pid."""
    fields = ["READY=1", f"MAINPID={os.getpid()}"]
    if status:
        fields.append(f"STATUS={status}")
    return notify(*fields)


def stopping(status: str = "") -> bool:
    """``STOPPING=1``: the service is draining and will exit."""
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))
