"""Erasing a recipient address from alert state, for privacy requests.

``service.erasure`` forgets an address in the messages; alerts quote recipients too
(an example's recipient and its diagnosis) and may carry one in their text, so the
alert stores (``AlertStore.erase_address``) rewrite every record, notice in the
history and outbox entry with the rules here, in one place for both stores.

What is kept: the alert itself, its figures and its examples' message ids (the
message store has forgotten the address by then, so a lookup shows nothing of it).
What goes: the recipient and the diagnosis of an example that names the address,
and the address wherever else it is quoted, replaced by :data:`ERASED`.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import quote

from service.alerts.lifecycle import AlertRecord
from service.alerts.model import Alert, Example

ERASED = "(erased)"


def address_forms(address: str) -> tuple[str, ...]:
    """The address as alerts may quote it: as is, and percent-encoded (as links
    carry what they point at)."""
    encoded = quote(address, safe="")
    return (address,) if encoded == address else (address, encoded)


def _scrub(text: str, forms: tuple[str, ...]) -> str:
    for form in forms:
        text = text.replace(form, ERASED)
    return text


def _scrub_optional(text: str | None, forms: tuple[str, ...]) -> str | None:
    return None if text is None else _scrub(text, forms)


def _scrub_mapping(mapping: dict[str, str], forms: tuple[str, ...]) -> dict[str, str]:
    # Keys too: figures and worst lists are keyed by what they are about.
    return {_scrub(key, forms): _scrub(value, forms) for key, value in mapping.items()}


def _names(text: str | None, forms: tuple[str, ...]) -> bool:
    return text is not None and any(form in text for form in forms)


def _erase_from_example(example: Example, forms: tuple[str, ...]) -> Example:
    if _names(example.recipient, forms):
        # The diagnosis describes that recipient: it goes with it, whatever it says.
        recipient, diagnosis = None, None
    else:
        recipient = example.recipient
        diagnosis = None if example.diagnosis is None else _scrub_mapping(example.diagnosis, forms)
    return Example(
        # Message ids are SES's own and never hold an address; scrubbed all the same
        # so that no field of a stored alert can keep it.
        message_id=_scrub(example.message_id, forms),
        recipient=recipient,
        detail=_scrub_optional(example.detail, forms),
        diagnosis=diagnosis,
    )


def erase_from_alert(alert: Alert, address: str) -> Alert | None:
    """``alert`` without ``address`` (already lower-cased by the caller); None when
    it did not name it, so callers rewrite only what changed.

    ``key`` and ``rule`` stay: they are the rule's name and kind from the operator's
    configuration (plus a domain), never a recipient, and a record is found by them.
    """
    forms = address_forms(address)
    erased = replace(
        alert,
        title=_scrub(alert.title, forms),
        summary=_scrub(alert.summary, forms),
        figures=_scrub_mapping(alert.figures, forms),
        worst=_scrub_mapping(alert.worst, forms),
        examples=tuple(_erase_from_example(example, forms) for example in alert.examples),
        link=_scrub_optional(alert.link, forms),
    )
    return None if erased == alert else erased


def erase_from_record(record: AlertRecord, address: str) -> AlertRecord | None:
    """``record`` (its last notice and what it was about) without ``address``; None
    when it did not name it."""
    forms = address_forms(address)
    alert = None if record.alert is None else erase_from_alert(record.alert, address)
    subjects = tuple(_scrub(subject, forms) for subject in record.subjects)
    if alert is None and subjects == record.subjects:
        return None
    return replace(record, alert=alert or record.alert, subjects=subjects)
