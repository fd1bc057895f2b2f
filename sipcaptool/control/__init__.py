"""The operator endpoints of a running collector: the control socket and ``/metrics``.

What the commands use is named here (``__all__``); the rooms behind it:

* :mod:`.protocol`  the line protocol (``status on|off|check``, ``stats``…), pure:
  no sockets, tested line by line; its docstring documents the protocol
* :mod:`.document`  the stats document: one shape for the end-of-run summary,
  ``ctl stats`` and ``/metrics``, and its text table
* :mod:`.paths`     where the socket lives and who may use it (runtime directory checks)
* :mod:`.loop`      the selector loop both servers run, with their limits
* :mod:`.server`    ``ControlServer``
* :mod:`.client`    ``send_command``
* :mod:`.metrics`   the Prometheus text and ``MetricsServer``
* :mod:`.endpoints` ``Endpoints``: what a long-running command starts and stops

The command-line options of the endpoints (``--control-timeout``,
``--control-max-connections``) are in ``sipcaptool.commands.common``: the library
never imports the CLI library.
"""

from __future__ import annotations

from .client import UntrustedPeerError, send_command
from .document import build_stats, format_stats_text, summary_document
from .endpoints import Endpoints, configure_limits
from .metrics import MetricsServer, prometheus_text
from .paths import (
    UnsafeControlPathError,
    check_control_socket,
    check_runtime_dir,
    default_control_path,
)
from .protocol import BAD_PARAMETER, NOT_ENOUGH_PARAMETERS, handle_command
from .server import ControlServer

__all__ = [
    "BAD_PARAMETER",
    "NOT_ENOUGH_PARAMETERS",
    "ControlServer",
    "Endpoints",
    "MetricsServer",
    "UnsafeControlPathError",
    "UntrustedPeerError",
    "build_stats",
    "check_control_socket",
    "check_runtime_dir",
    "configure_limits",
    "default_control_path",
    "format_stats_text",
    "handle_command",
    "prometheus_text",
    "send_command",
    "summary_document",
]
