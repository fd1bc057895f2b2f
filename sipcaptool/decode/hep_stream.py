"""HEPv3 over a byte stream (TCP, TLS): cutting the stream into packets.

Sans-IO, like the decoders beside it: :class:`HepStream` takes the bytes a connection
delivered and returns the whole HEP3 packets in them, each to be decoded by
:func:`sipcaptool.decode.hep.decode_datagram`. A packet carries its own length (the u16
after the ``HEP3``/``EEP3`` id, header included), so the stream needs no other framing;
it cannot resynchronise after bytes that are not a HEP3 header, so these end the
connection (``hep3-stream-bad-length``).
"""

from __future__ import annotations

import struct

from sipcaptool.decode.hep import HEP3_IDS
from sipcaptool.errors import DecodeError

__all__ = ["HepStream"]

_u16 = struct.Struct("!H").unpack_from


class HepStream:
    """Sans-IO framer for HEPv3 over a byte stream (TCP, TLS).

    :meth:`feed` takes whatever the socket read and returns the complete HEP3 packets
    (as bytes, to give to :func:`decode_datagram`): several per read, or one over many
    reads. The stream cannot resynchronise: a header that is not ``HEP3``/``EEP3`` or a
    total length < 6 raises ``DecodeError("hep3-stream-bad-length")`` and the caller
    should close the connection. If complete packets came before the bad bytes in the
    same read, they are returned first and the error is raised by the next call (it is
    also available as :attr:`error` at once).

    At most one incomplete packet (< 65535 bytes) is buffered between calls.
    """

    __slots__ = ("_buf", "_need", "error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 0  # total length of the packet being collected, 0 = header unknown
        self.error: DecodeError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete packet."""
        return len(self._buf)

    def _fail(self, detail: str, out: list[bytes]) -> list[bytes]:
        self.error = DecodeError("hep3-stream-bad-length", detail)
        self._buf.clear()
        if out:
            return out
        raise self.error

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes read from the stream; return the packets completed by them."""
        if self.error is not None:
            raise self.error
        out: list[bytes] = []
        buf = self._buf
        pos = 0
        n = len(data)
        while pos < n:
            if not buf and not self._need and n - pos >= 6:
                # Fast path: a header at a packet boundary inside this read.
                if data[pos:pos + 4] not in HEP3_IDS:
                    return self._fail(f"no HEP3 id at stream offset +{pos}", out)
                total = _u16(data, pos + 4)[0]
                if total < 6:
                    return self._fail(f"HEP3 length {total}", out)
                if n - pos >= total:
                    out.append(bytes(data[pos:pos + total]))
                    pos += total
                    continue
                self._need = total
                buf += data[pos:]
                break
            if not self._need:
                # Collect the 6-byte header, checking the id as soon as bytes arrive.
                take = min(6 - len(buf), n - pos)
                buf += data[pos:pos + take]
                pos += take
                k = min(len(buf), 4)
                head = bytes(buf[:k])
                if head != b"HEP3"[:k] and head != b"EEP3"[:k]:
                    return self._fail("no HEP3 id", out)
                if len(buf) < 6:
                    break
                total = _u16(buf, 4)[0]
                if total < 6:
                    return self._fail(f"HEP3 length {total}", out)
                self._need = total
            take = min(self._need - len(buf), n - pos)
            buf += data[pos:pos + take]
            pos += take
            if len(buf) == self._need:
                out.append(bytes(buf))
                buf.clear()
                self._need = 0
        return out
