"""Counters shared by every stage: what was read, stored, skipped, and why.

Keys are plain strings with a category prefix so a summary can group them (the stats
document, ``sipcaptool.control.document``, shows each category as one group):

* ``packets``                frames/datagrams read from a source
* ``messages``               application messages decoded (SIP, or HEP logs/RTCP/reports)
* ``stored:<table>``         rows written to a table
* ``skipped:<reason>``       input that is not a message (``non-sip``, ``keepalive``,
                             ``icmp-quoted``, ``non-ip``, ``port-filter`` ...)
* ``malformed:<reason>``     input that claimed to be a message but did not decode
* ``dropped:<reason>``       messages that were lost on purpose (``capture-off``,
                             ``auth``, ``spool-full`` ...)
* ``evicted:<reason>``       decoder state given up (``fragments``, ``tcp-stream``)
* ``truncated:<column>``     values cut to their column width (the row is kept)
* ``adjusted:<reason>``      messages stored with something chosen for them (the row is
                             kept whole): ``clock-skew``, a time too far from the clock
                             to name a strftime table, which the arrival time names
* ``refused-bytes:<reason>`` the bytes of what was refused (``auth``, ``hep-inflate`` ...)
* ``stored-bad:<reason>``    malformed SIP stored anyway, fields best effort
                             (``capture_bad_msgs``); also counted as ``malformed:<reason>``
* ``lenient:<what>``         messages stored, columns filled, that depart from the
                             standard in a way that loses nothing: ``ipv6-no-brackets``,
                             ``lf-line-ends``, ``sip-version-case`` (decode/sip.py), and
                             ``hep-type-<n>``, SIP sent in HEP under another type
* ``dedup:<node>``           copies of a message already stored from another capture
                             point, not stored again (``dedup_window``, sipcaptool.dedup),
                             by the capture point that saw them (HEP capture id,
                             ``vlan-10``, ``link`` ...); ``evicted:dedup-full`` counts
                             the entries that left its full table early
* ``db:<event>``             batches, retries, errors
* ``control:<reason>``       control-socket connections closed or refused (``timeout``,
                             ``evicted-idle``, ``refused-full``, ``line-too-long``,
                             ``peer-uid``, ``accept-error``); counted by the control
                             socket itself, shown by ``ctl stats`` and ``/metrics``
* ``metrics:<reason>``       the same for ``--metrics`` (``bad-request``,
                             ``request-too-long`` instead of the two Unix-socket ones)
"""

from __future__ import annotations

from collections import Counter


class Stats(Counter[str]):
    """A Counter with helpers to group keys by their ``category:`` prefix."""

    def group(self, category: str) -> dict[str, int]:
        """Return ``{rest: count}`` for every key ``category:rest`` with a non-zero count."""
        prefix = category + ":"
        return {k[len(prefix):]: v for k, v in sorted(self.items()) if k.startswith(prefix) and v}

    def category_total(self, category: str) -> int:
        """The sum of every ``category:*`` count (``Counter.total()`` sums them all)."""
        return sum(self.group(category).values())
