"""sipcaptool: store every SIP message of a capture, a live interface or a HEP feed in a database.

The package is layered (see README "Design"):

* ``sipcaptool.decode``  pure decoders, bytes in, records out, no I/O;
* ``sipcaptool.sources`` capture sources (pcap files, live libpcap, IPIP raw sockets, HEP);
* ``sipcaptool.store``   table routing, batching, one adapter per database;
* ``sipcaptool.commands`` thin click commands.
"""

__version__ = "0.1.0"
