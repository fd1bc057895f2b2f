"""Reading back what was stored: find calls (search), draw them (flow), export them.

``model`` holds the records every part shares: :class:`~sipcaptool.query.model.StoredMessage`
(one stored row, as read back from any database) and :class:`~sipcaptool.query.model.Call`
(the messages of one Call-ID, with its summary and legs).
"""

from .model import Call, CallSummary, StoredMessage

__all__ = ["Call", "CallSummary", "StoredMessage"]
