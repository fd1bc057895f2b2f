"""The columns where we deliberately store something else than Kamailio 5.6.3
(../shared/reference/SCHEMA.md, "Where sipcaptool deliberately differs"), with why.
Shared by the conformance tests (row builder, HEP collector, HEP vectors)."""

TOLERATED = {
    "auth": "Kamailio 5.6.3 never fills auth (bug); we store the Proxy-Authorization "
            "(else Authorization) header body",
    "originator_ip": "Kamailio writes a NUL over the first ':' after X-OIP (MySQL keeps "
                     "'ip\\0port', PostgreSQL cuts there, [v6]:port is cut inside the "
                     "address); we parse X-OIP: ip[:port] properly and never touch the buffer",
    "originator_port": "same X-OIP fix: the port of [v6]:port, where Kamailio stores 0",
    "msg": "we keep the whole message byte for byte: Kamailio's msg holds the NUL it wrote "
           "into X-OIP, and MySQL's varchar(1500) utf8mb3 column loses messages over 1500 "
           "characters, with invalid UTF-8 or 4-byte UTF-8 (those rows are compared with "
           "the PostgreSQL reference, which kept the bytes)",
    "reason": "header names are matched case-insensitively (RFC 3261); Kamailio compares "
              "the first letter of 'Reason' case-sensitively and misses 'reason:'",
}
