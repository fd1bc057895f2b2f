"""``send_command``: one command to a control socket, one answer back."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Collection

from .paths import describe_uid, peer_uid

__all__ = ["UntrustedPeerError", "send_command"]


class UntrustedPeerError(PermissionError):
    """The process answering on a control socket belongs to another user."""


def send_command(path: str, line: str, timeout: float = 5.0,
                 peer_uids: Collection[int] | None = None) -> str:
    """Send one command and return the answer (without the final newline / empty line).

    A server whose listen backlog is full (many clients at once), or that closes the
    connection before answering (full: see the module's Limits), is tried again until
    ``timeout``; every command is idempotent, so a command is never lost or doubled.
    ``peer_uids``: refuse (:class:`UntrustedPeerError`) unless the answering process runs
    as one of these users (``SO_PEERCRED``), so that no one else's process, wherever its
    socket sits, is told anything.

    Raises:
        FileNotFoundError, ConnectionRefusedError, PermissionError, TimeoutError, OSError.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    data = line.strip().encode() + b"\n"
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        chunks: list[bytes] = []
        try:
            try:
                s.connect(path)
            except BlockingIOError:  # EAGAIN: the backlog is full; the server is busy
                pass
            else:
                if peer_uids is not None:
                    uid = peer_uid(s)
                    if uid is not None and uid not in peer_uids:
                        raise UntrustedPeerError(errno.EPERM,
                                                 f"the process answering is {describe_uid(uid)}'s")
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        chunks.append(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    if chunks:
                        raise
                if chunks or data == b"\n":
                    return b"".join(chunks).decode("utf-8", "replace").rstrip("\n")
        finally:
            s.close()
        # not connected, or closed before a word of answer: try again
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "the server is busy (no answer in time)")
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.2)

