"""Pure decoders: bytes in, records (or "need more data") out.

Nothing in this package does I/O or imports socket-, pcap- or database-level
modules beyond what the standard library offers for address formatting.

Where to start: ``packet.PacketDecoder`` (captured frames -> ``CapturedMessage``),
``hep.decode_datagram`` (a HEP datagram), ``hep_stream.HepStream`` (HEP over TCP) and
``sip.parse_sip`` (a SIP message -> the values of the capture columns).
"""

__all__ = ["defrag", "hep", "hep_stream", "ip", "link", "packet", "sctp", "sip", "sip_fields", "tcp",
           "tunnel"]
