"""Privileges: what a capture needs (root or CAP_NET_RAW), and giving them up.

The capture handles and sockets are opened first; ``drop_privileges`` then becomes the
``--user`` given. What the capture imports later is imported before (``preload``): the
Python installation may not be readable by the new user.
"""

from __future__ import annotations

import logging
import os

from ..errors import CaptureError, ConfigError

log = logging.getLogger("sipcaptool.live")


def can_capture() -> bool:
    """Can this process open a capture handle (root, or CAP_NET_RAW effective)?"""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 13))  # CAP_NET_RAW
    except (OSError, ValueError):
        pass
    return True  # cannot tell: try, and the error says why



# Imported before dropping privileges: after the switch the Python installation may
# not be readable by the new user (e.g. under a private home directory).
_PRELOAD = ("queue", "threading", "multiprocessing.queues", "multiprocessing.synchronize",
            "multiprocessing.connection", "multiprocessing.popen_fork",
            "multiprocessing.process", "multiprocessing.util", "multiprocessing.reduction",
            "multiprocessing.context", "multiprocessing.sharedctypes", "json", "zlib",
            "encodings.idna", "select", "sipcaptool.workers",
            "sipcaptool.pipeline", "sipcaptool.row", "sipcaptool.decode.packet",
            "sipcaptool.decode.sip", "sipcaptool.decode.defrag", "sipcaptool.decode.tcp",
            "sipcaptool.decode.hep", "sipcaptool.decode.tunnel", "sipcaptool.store.writer",
            "sipcaptool.store.router", "sipcaptool.store.schema", "sipcaptool.store._text",
            "sipcaptool.senders.hep", "sipcaptool.commands.common")
_PRELOAD_DB = {"sqlite": ("sqlite3", "sipcaptool.store.sqlite"),
               "mysql": ("pymysql", "sipcaptool.store.mysql"),
               "postgresql": ("psycopg2", "sipcaptool.store.postgres"),
               "clickhouse": ("clickhouse_driver", "sipcaptool.store.clickhouse")}


def preload(dialects: set[str]) -> None:
    import importlib

    names = list(_PRELOAD)
    for d in dialects:
        names.extend(_PRELOAD_DB.get(d, ()))
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - an optional driver
            log.debug("preload: %s not available", name)


def drop_privileges(user: str) -> None:
    """Become ``user`` (and its primary group, no supplementary groups)."""
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"--user {user!r}: no such user") from None
    if os.geteuid() == pw.pw_uid:
        return
    try:
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except PermissionError:
        raise CaptureError(f"--user {user}: cannot switch to that user (only root can)") from None
    os.environ["HOME"] = pw.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = user


__all__ = ["can_capture", "drop_privileges", "preload"]
