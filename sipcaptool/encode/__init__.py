"""Pure encoders: a :class:`~sipcaptool.record.CapturedMessage` in, wire bytes out.

The mirror of :mod:`sipcaptool.decode`, under the same rules: no I/O, standard library
only. What sends the bytes lives in :mod:`sipcaptool.senders`.
"""

__all__ = ["hep"]
