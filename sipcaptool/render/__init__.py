"""Drawing calls: the ladder model (``flow``) and its formats (``text``, ``svg``, ``html``,
``json``), pure functions from ``query.model.Call`` to a string; ``sdp`` reads the media
summary out of a message body. No I/O here: the ``flow`` command writes the result."""

from .flow import Arrow, Column, Ladder, build_ladder

FORMATS = ("text", "svg", "html", "json")

__all__ = ["FORMATS", "Arrow", "Column", "Ladder", "build_ladder"]
