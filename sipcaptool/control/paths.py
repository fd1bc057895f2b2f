"""Where the control socket lives, and who may use it.

Who may talk
------------
The default socket's directory (``/tmp/sipcaptool-<uid>`` and the others of
:func:`default_control_path`) must be a directory -- not a symbolic link -- owned by the
user and writable by no one else, as OpenSSH and tmux require of theirs; it is created
mode 0700. Anything else is refused (:class:`UnsafeControlPathError`): another local user
who made that directory first could move the collector's socket away and answer
``ctl`` in its place. The server answers only clients of its own user or root
(``SO_PEERCRED``; others are closed, ``control:peer-uid``); ``ctl`` talks only to a
socket, and a process, of its own user or root (root talks to any).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import struct

from ..errors import CaptureError

__all__ = [
    "UnsafeControlPathError",
    "check_control_socket",
    "check_parent",
    "check_runtime_dir",
    "default_control_path",
    "describe_uid",
    "peer_uid",
    "prepare_path",
]

log = logging.getLogger("sipcaptool.control")


def default_control_path(command: str) -> str:
    """Where ``command``'s control socket goes when ``--control`` is not given.

    ``$XDG_RUNTIME_DIR/sipcaptool/<command>.sock`` when that variable names a directory;
    otherwise ``/run/sipcaptool/<command>.sock`` for root and
    ``/tmp/sipcaptool-<uid>/<command>.sock`` for anyone else.
    """
    name = f"{command}.sock"
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "sipcaptool", name)
    uid = os.geteuid()
    if uid == 0:
        return os.path.join("/run/sipcaptool", name)
    return os.path.join(f"/tmp/sipcaptool-{uid}", name)


class UnsafeControlPathError(CaptureError):
    """A control socket, or its directory, that another local user could have put there."""


def describe_uid(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def check_runtime_dir(directory: str, *, create: bool = False) -> None:
    """Refuse a default socket directory another user could have made (OpenSSH, tmux).

    With ``create``, the directory is made (mode 0700) when missing. It must then be a
    directory, not a symbolic link, owned by the effective user and writable by no one
    else; its parent must not let others replace it. Raises :class:`UnsafeControlPathError`
    (one line: what is wrong and what to do).
    """
    check_parent(directory, "control socket directory")
    if create:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise CaptureError(f"control socket directory {directory}: cannot create it: "
                               f"{e.strerror}") from None
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return
    except OSError as e:
        raise CaptureError(f"control socket directory {directory}: {e.strerror}") from None
    euid = os.geteuid()
    fix = "remove it (or set XDG_RUNTIME_DIR, or give --control PATH)"
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeControlPathError(f"control socket directory {directory} is a symbolic link, "
                                f"owned by {describe_uid(st.st_uid)}; refusing to use it: {fix}")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeControlPathError(f"control socket directory {directory} is not a directory; {fix}")
    if st.st_uid != euid:
        raise UnsafeControlPathError(f"control socket directory {directory} is owned by "
                                f"{describe_uid(st.st_uid)}, not by you ({describe_uid(euid)}): another user "
                                f"could answer in the collector's place; {fix}")
    if st.st_mode & 0o022:
        raise UnsafeControlPathError(f"control socket directory {directory} is writable by "
                                f"{'others' if st.st_mode & 0o002 else 'its group'} (mode "
                                f"{stat.S_IMODE(st.st_mode):04o}): another user could answer in "
                                f"the collector's place; make it 0700 ({fix})")


def check_parent(path: str, what: str = "control socket") -> None:
    """The directory holding ``path`` must not let another user replace ``path``: owned
    by this user or root, and not writable by others unless sticky (as /tmp)."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(parent)
    except OSError:
        return  # missing: creating it, or connecting, fails with its own message
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        why = f"is owned by {describe_uid(st.st_uid)}"
    elif st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
        why = f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    else:
        return
    raise UnsafeControlPathError(f"{what} {path}: its directory {parent} {why}, so another "
                                 "user could replace it; refusing to use it: give --control "
                                 "PATH in a directory only you (or root) can write")


def check_control_socket(path: str, *, default: bool) -> None:
    """Before ``ctl`` talks: refuse a socket (or a default directory) of another user.

    ``default``: the path is one of :func:`default_control_path`'s, whose directory is
    checked as :func:`check_runtime_dir` does; an explicit path's directory only must
    not be writable by others without the sticky bit. The socket itself must belong to
    the effective user or root (root talks to any). A missing socket passes (connecting
    says so).
    """
    euid = os.geteuid()
    if euid == 0:
        return  # root talks to any collector (/run/sipcaptool may be the service user's)
    directory = os.path.dirname(os.path.abspath(path))
    if default:
        check_runtime_dir(directory)
    else:
        check_parent(path)
    try:
        st = os.stat(path)
    except OSError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafeControlPathError(f"control socket {path}: not a socket")
    if st.st_uid not in (euid, 0):
        raise UnsafeControlPathError(f"control socket {path} is owned by {describe_uid(st.st_uid)}, not by "
                                f"you ({describe_uid(euid)}): refusing to talk to another user's "
                                "process; give the collector's --control PATH")


def peer_uid(sock: socket.socket) -> int | None:
    """The user of the process at the other end of a Unix socket (None if unknown)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    return int(struct.unpack("3i", raw)[1])


def prepare_path(path: str, default: bool = False) -> None:
    """Make the directory (0700 when we create it); remove a stale socket; refuse a live one.

    ``default``: the path is :func:`default_control_path`'s, whose directory is checked
    (and made) by :func:`check_runtime_dir`; an explicit path's directory must not let
    another user replace the socket (writable by others without the sticky bit, or owned
    by another user than this one or root).
    """
    directory = os.path.dirname(os.path.abspath(path))
    if default:
        check_runtime_dir(directory, create=True)
    elif os.path.isdir(directory):
        check_parent(path)
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise CaptureError(f"control socket {path}: cannot create directory "
                               f"{directory}: {e.strerror}") from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise CaptureError(f"control socket {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise CaptureError(f"control socket {path}: a file that is not a socket is in the way; "
                           "remove it or choose another --control path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        # nobody listens: left over from a process that died; take its place
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CaptureError(f"control socket {path}: stale socket cannot be removed: "
                               f"{e.strerror}") from None
        log.info("control socket %s: removed a stale socket", path)
        return
    except PermissionError:
        raise CaptureError(f"control socket {path}: in use by another user's process "
                           "(permission denied); choose another --control path") from None
    except OSError as e:
        raise CaptureError(f"control socket {path}: cannot probe it: {e.strerror}") from None
    else:
        raise CaptureError(f"control socket {path}: another running process answers on it; "
                           "stop it or choose another --control path")
    finally:
        probe.close()

