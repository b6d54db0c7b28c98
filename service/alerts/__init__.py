"""Alerts to chat: what fired (``model``), how each chat service wants to hear it
(``payloads``), and where to send it (``sinks``)."""
