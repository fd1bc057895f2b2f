"""Senders: what leaves the tool for another one (all I/O).

:mod:`sipcaptool.senders.hep` sends captured messages to a HEP collector (``live
--hep-to``, agent mode). The bytes are made by the pure encoders in
:mod:`sipcaptool.encode`.
"""

__all__ = ["hep"]
