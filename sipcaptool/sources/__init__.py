"""Capture sources: pcap files, live libpcap, IPIP raw sockets, HEP listeners (all I/O)."""
