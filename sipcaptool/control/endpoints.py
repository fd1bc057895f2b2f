"""``Endpoints``: the control socket and ``/metrics`` a long-running command starts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import CaptureError
from ..net import EndpointError, parse_hostport
from ..stats import Stats
from .loop import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT
from .metrics import MetricsServer
from .paths import UnsafeControlPathError, default_control_path
from .server import ControlServer

__all__ = ["Endpoints", "configure_limits"]


# the limits Endpoints gives its servers (configure_limits: the command's settings)
_LIMITS = {"timeout": DEFAULT_TIMEOUT, "max_connections": DEFAULT_MAX_CONNECTIONS}


def configure_limits(settings: Any) -> None:
    """Take ``control_timeout`` and ``control_max_connections`` from ``settings`` for the
    servers :class:`Endpoints` starts in this process."""
    _LIMITS["timeout"] = float(settings.control_timeout)
    _LIMITS["max_connections"] = int(settings.control_max_connections)


class Endpoints:
    """The operator endpoints of one long-running command: control socket and metrics.

    ``control`` is a path, ``"none"`` (no socket) or None (the default path of
    :func:`default_control_path`). An explicit path that another running process
    answers on is refused (CaptureError, exit 5); the *default* path in use (a second
    collector on the same host) only gives a warning and the command runs without a
    control socket -- unless its directory is not safe (another user's, writable by
    others, a symbolic link: :class:`UnsafeControlPathError`, exit 5), which refuses. ``metrics``
    is ``HOST:PORT`` for a Prometheus endpoint, or None. ``settings`` gives
    ``control_timeout`` and ``control_max_connections`` (else those of
    :func:`configure_limits`, the defaults until it is called); both servers count into
    ``counters`` (``control:<reason>``, ``metrics:<reason>``), which their answers
    include.
    """

    def __init__(self, command: str, control: str | None, metrics: str | None,
                 capture_flag: Any, stats_provider: Callable[[], Mapping[str, Any]],
                 extra: Mapping[str, Any] | None = None, settings: Any = None) -> None:
        self.timeout = float(getattr(settings, "control_timeout", _LIMITS["timeout"]))
        self.max_connections = int(getattr(settings, "control_max_connections",
                                           _LIMITS["max_connections"]))
        self.counters = Stats()
        self.command = command
        self.control_arg = control
        self.metrics_arg = metrics
        self.capture_flag = capture_flag
        self.stats_provider = stats_provider
        self.extra = dict(extra or {})
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None

    def start(self) -> Endpoints:

        arg = self.control_arg
        if arg is None or arg.strip().lower() != "none":
            path = arg or default_control_path(self.command)
            server = ControlServer(path, self.capture_flag, self.stats_provider, extra=self.extra,
                                   timeout=self.timeout, max_connections=self.max_connections,
                                   counters=self.counters, default=not arg)
            try:
                self.control = server.start()
            except CaptureError as e:
                if arg or isinstance(e, UnsafeControlPathError):
                    # asked for explicitly, or a directory someone else may have made
                    # to steer the collector: refuse to run
                    raise
                logging.getLogger("sipcaptool.control").warning(
                    "no control socket: %s (give --control PATH, or --control none)", e)
        if self.metrics_arg:
            try:
                addr = parse_hostport(self.metrics_arg, setting="--metrics")
            except EndpointError:
                self.stop()
                raise
            try:
                self.metrics = MetricsServer(addr, self.stats_provider,
                                             capture_flag=self.capture_flag,
                                             request_timeout=self.timeout,
                                             max_connections=self.max_connections,
                                             counters=self.counters).start()
            except OSError as e:
                self.stop()
                raise CaptureError(f"--metrics {self.metrics_arg}: cannot listen: "
                                   f"{e.strerror or e}") from None
        return self

    def describe(self) -> str:
        parts = []
        if self.control is not None:
            parts.append(f"control {self.control.path}")
        if self.metrics is not None:
            host, port = self.metrics.address
            parts.append(f"metrics http://{host}:{port}/metrics")
        return ", ".join(parts)

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()
            self.control = None
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
