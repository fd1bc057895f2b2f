"""Pure decoders: bytes in, records (or "need more data") out.

Nothing in this package does I/O or imports socket-, pcap- or database-level
modules beyond what the standard library offers for address formatting.
"""
