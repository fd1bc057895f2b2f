"""The media summary of an SDP body: what a ladder writes under an INVITE or a 200.

Pure and forgiving: any bytes in, a (possibly empty) tuple of :class:`Media` out, never an
exception. Only the lines a reader of a call flow asks about are read: ``c=`` (session
and media level), ``m=``, ``a=rtpmap`` and the direction attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Media", "body_of", "has_sdp", "parse_sdp"]

# RFC 3551 static payload types (the ones still met in the wild)
STATIC_PT = {
    0: "PCMU/8000", 3: "GSM/8000", 4: "G723/8000", 5: "DVI4/8000", 6: "DVI4/16000",
    7: "LPC/8000", 8: "PCMA/8000", 9: "G722/8000", 10: "L16/44100", 11: "L16/44100",
    12: "QCELP/8000", 13: "CN/8000", 14: "MPA/90000", 15: "G728/8000", 18: "G729/8000",
    25: "CelB/90000", 26: "JPEG/90000", 31: "H261/90000", 32: "MPV/90000", 34: "H263/90000",
}
SHORT = {"telephone-event": "DTMF"}  # names shortened in a summary
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True, slots=True)
class Media:
    """One ``m=`` line: ``audio 10.0.0.1:6000 RTP/AVP PCMU/8000,telephone-event/8000``."""

    kind: str                  # audio, video, image, application...
    address: str               # from the media's c= line, else the session's
    port: int
    transport: str             # RTP/AVP, RTP/SAVP, udptl...
    codecs: tuple[str, ...]    # rtpmap names in the order of the m= line
    direction: str             # sendrecv unless an attribute says otherwise

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def summary(self, max_codecs: int = 3) -> str:
        codecs = [SHORT.get(c.split("/")[0].lower(), c.split("/")[0]) for c in self.codecs]
        shown = ",".join(codecs[:max_codecs]) + ("…" if len(codecs) > max_codecs else "")
        text = f"{self.kind} {self.endpoint} {shown}".rstrip()
        if self.port == 0:
            text += " (rejected)"
        elif self.direction != "sendrecv":
            text += f" {self.direction}"
        return text


def body_of(msg: bytes) -> bytes:
    """The body of a SIP message: what follows the first empty line ("" when none)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = msg.find(sep)
        if i >= 0:
            return msg[i + len(sep):]
    return b""


def has_sdp(content_type: str, msg: bytes) -> bool:
    """True when the message carries an SDP body (plain, or a part of a multipart body)."""
    ct = content_type.lower()
    if "application/sdp" in ct:
        return bool(body_of(msg).strip())
    if ct.startswith("multipart/"):
        return b"application/sdp" in body_of(msg).lower()
    return False


def parse_sdp(body: bytes) -> tuple[Media, ...]:
    """The media descriptions of an SDP body (a multipart body's SDP part is found too)."""
    text = body.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    session_addr = ""
    session_dir = "sendrecv"
    media: list[dict[str, object]] = []
    for ln in lines:
        if len(ln) < 2 or ln[1] != "=":
            continue
        kind, value = ln[0], ln[2:].strip()
        cur = media[-1] if media else None
        if kind == "c":
            parts = value.split()
            addr = parts[2].split("/")[0] if len(parts) >= 3 else ""
            if cur is None:
                session_addr = addr
            else:
                cur["address"] = addr
        elif kind == "m":
            parts = value.split()
            if len(parts) < 3:
                continue
            port_s = parts[1].split("/")[0]
            media.append({"kind": parts[0], "port": int(port_s) if port_s.isdigit() else 0,
                          "transport": parts[2], "fmts": parts[3:], "rtpmap": {},
                          "address": None, "direction": None})
        elif kind == "a":
            name, _, arg = value.partition(":")
            if name in DIRECTIONS:
                if cur is None:
                    session_dir = name
                else:
                    cur["direction"] = name
            elif name == "rtpmap" and cur is not None:
                pt, _, enc = arg.strip().partition(" ")
                rtpmap = cur["rtpmap"]
                assert isinstance(rtpmap, dict)
                rtpmap[pt] = enc.strip()
    out = []
    for m in media:
        rtpmap = m["rtpmap"]
        fmts = m["fmts"]
        assert isinstance(rtpmap, dict) and isinstance(fmts, list)
        codecs: list[str] = []
        for f in fmts:
            mapped = rtpmap.get(f)
            if not isinstance(mapped, str) or not mapped:
                mapped = str(STATIC_PT.get(int(f), f)) if f.isdigit() else str(f)
            codecs.append(mapped)
        port = m["port"]
        assert isinstance(port, int)
        out.append(Media(kind=str(m["kind"]), address=str(m["address"] or session_addr),
                         port=port, transport=str(m["transport"]), codecs=tuple(codecs),
                         direction=str(m["direction"] or session_dir)))
    return tuple(out)
