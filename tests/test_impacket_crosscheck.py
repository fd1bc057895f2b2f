"""Cross-check addresses, ports and transport against impacket's ImpactDecoder.

For every corpus frame that yields SIP and that impacket can take apart down to a
UDP/TCP header directly over IPv4/IPv6 (no tunnel: impacket stops at GRE, IPIP and
GTP-U), our messages must carry the same addresses, ports and transport.
"""

from __future__ import annotations

import ipaddress

import pytest

from sipcaptool.decode.packet import PacketDecoder
from sipcaptool.record import PROTO_TCP, PROTO_UDP, PROTO_WS
from sipcaptool.stats import Stats

pcapy = pytest.importorskip("pcapy")
ImpactDecoder = pytest.importorskip("impacket.ImpactDecoder")
ImpactPacket = pytest.importorskip("impacket.ImpactPacket")
IP6mod = pytest.importorskip("impacket.IP6")

from shared_data import CORPUS, needs_shared  # noqa: E402

pytestmark = needs_shared("corpus")

class _RawIP:
    """Raw IP / BSD loopback frames: skip ``strip`` bytes, then IPv4 or IPv6 by version."""

    class _Wrap:
        def __init__(self, ipl):
            self._ipl = ipl

        def child(self):
            return self._ipl

    def __init__(self, strip: int = 0):
        self.strip = strip

    def decode(self, frame: bytes):
        body = frame[self.strip:]
        dec = ImpactDecoder.IP6Decoder() if body[:1] and body[0] >> 4 == 6 else ImpactDecoder.IPDecoder()
        return self._Wrap(dec.decode(body))


DECODERS = {1: ImpactDecoder.EthDecoder, 113: ImpactDecoder.LinuxSLLDecoder,
            0: lambda: _RawIP(4), 12: _RawIP, 101: _RawIP, 228: _RawIP}
FILES = sorted(p.name for p in CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []


def _impacket_endpoints(decoder, frame: bytes):
    """(src, sport, dst, dport, transport) of the outermost IP/L4, or None."""
    try:
        pkt = decoder.decode(frame)
    except Exception:  # noqa: BLE001 - impacket raises anything on what it cannot read
        return None
    ipl = pkt.child()
    if isinstance(ipl, ImpactPacket.IP):
        if ipl.get_ip_off() & 0x1FFF or ipl.get_ip_mf():
            return None   # a fragment: impacket does not reassemble
        src, dst = ipl.get_ip_src(), ipl.get_ip_dst()
    elif isinstance(ipl, IP6mod.IP6):
        src, dst = ipl.get_ip_src().as_string(), ipl.get_ip_dst().as_string()
    else:
        return None
    l4 = ipl.child()
    if isinstance(l4, ImpactPacket.UDP):
        ports, tr = (l4.get_uh_sport(), l4.get_uh_dport()), "udp"
    elif isinstance(l4, ImpactPacket.TCP):
        ports, tr = (l4.get_th_sport(), l4.get_th_dport()), "tcp"
    else:
        return None
    if tr == "udp" and (2152 in ports or 4789 in ports):
        return None       # tunnel: we report the inner packet
    return (str(ipaddress.ip_address(src)), ports[0], str(ipaddress.ip_address(dst)), ports[1], tr)


@pytest.mark.parametrize("name", [f for f in FILES if not f.startswith("hep")])
def test_endpoints_agree_with_impacket(name):
    reader = pcapy.open_offline(str(CORPUS / name))
    lt = reader.datalink()
    if lt not in DECODERS:
        pytest.skip(f"impacket has no decoder for link type {lt}")
    imp = DECODERS[lt]()
    dec = PacketDecoder(lt, Stats())
    checked = 0
    while True:
        hdr, frame = reader.next()
        if hdr is None:
            break
        msgs = dec.decode(0, frame, hdr.getlen())
        if not msgs:
            continue
        ref = _impacket_endpoints(imp, frame)
        if ref is None:
            continue
        for m in msgs:
            tr = {PROTO_UDP: "udp", PROTO_TCP: "tcp", PROTO_WS: "tcp"}[m.proto]
            assert (m.src_ip, m.src_port, m.dst_ip, m.dst_port, tr) == ref
            checked += 1
    if name not in ("sip-gre-ethernet-udp.pcapng", "sip-vlan-gre-ppp-udp.pcapng",
                    "sip-gtpu-ipv6-ims-sll.pcap", "sip-sctp-multipart-sll.pcap",
                    "sip-pppoe-mixed-truncated.pcap", "sip-ipv6-udp-fragmented-sll.pcap"):
        assert checked > 0
