"""What counts as an email address, and the form state keeps recipients in.

A recipient is keyed by its address everywhere (message state, search, suppressions,
erasure), so whatever an event names as a recipient must be one address and nothing
else. The rule, pure and free of I/O:

* a display-name form (``"Jane Doe" <jane@example.com>``, as bounce reports may give)
  is read as the address between its last ``<`` and the closing ``>``;
* exactly one ``@`` outside double quotes (``"a@b"@example.com`` has one;
  ``a@b@example.com`` has two), a non-empty local part before it and a domain after;
* an unquoted local part and the domain hold no white space, control characters or
  RFC 5322 specials (``()<>[]:;@\\,"``); a quoted local part (``"john doe"@x``) may
  hold spaces and escapes but no control characters; the domain is dot-separated
  non-empty labels or an address literal (``[192.0.2.1]``);
* at most :data:`MAX_ADDRESS_CHARS` characters in all and :data:`MAX_LOCAL_CHARS`
  before the ``@``: RFC 5321's limits (a path of 256 octets with its angle brackets,
  a local part of 64), counted in characters. Text longer than :data:`MAX_RAW_CHARS`
  (display name included) is not read at all.

Addresses are case-folded (``str.lower``), as mailbox providers and SES's suppression
list match them; otherwise ``Jane@x`` and ``jane@x`` would be two recipients.
"""

from __future__ import annotations

import re

MAX_ADDRESS_CHARS = 254
MAX_LOCAL_CHARS = 64
# A display name may come with the address; past this the text is not an address
# anyone sends to, and is refused before any work is spent on it.
MAX_RAW_CHARS = 1_024

_SPECIALS = frozenset('()<>[]:;@\\,"')
# The usual address (lower-case ASCII dot-atom at a host name): settled by one C-level
# match, so the common case costs next to nothing; anything else takes the full rule.
_PLAIN = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[a-z0-9_-]+(?:\.[a-z0-9_-]+)*", re.ASCII)


def normalize_address(text: str) -> str:
    """A recipient as state keeps it: bare address, case folded (not validated).

    Searches use it on what a user typed, so a query finds what the parser stored.
    """
    address = text.strip()
    # Bounce reports may name a recipient as `"Name" <addr>`.
    if address.endswith(">") and "<" in address:
        address = address[address.rindex("<") + 1 : -1].strip()
    return address.lower()


def read_address(value: object) -> tuple[str | None, str]:
    """``(address, "")`` when ``value`` is an address (normalized), else ``(None, why)``.

    No exception either way: an event may name thousands of bad recipients.
    """
    if not isinstance(value, str):
        return None, "expected an email address string"
    if len(value) <= MAX_ADDRESS_CHARS and _PLAIN.fullmatch(value) is not None:
        return value, ""
    if len(value) > MAX_RAW_CHARS:
        return None, f"over {MAX_RAW_CHARS} characters"
    address = normalize_address(value)
    why = _problem(address)
    return (None, why) if why else (address, "")


def _problem(address: str) -> str:
    """Why ``address`` (normalized) is not an address; "" when it is one."""
    if not address:
        return "empty"
    if len(address) > MAX_ADDRESS_CHARS:
        return f"over {MAX_ADDRESS_CHARS} characters"
    at, why = _unquoted_at(address)
    if why:
        return why
    local, domain = address[:at], address[at + 1 :]
    if not local:
        return "empty local part before the @"
    if len(local) > MAX_LOCAL_CHARS:
        return f"local part over {MAX_LOCAL_CHARS} characters"
    if not domain:
        return "no domain after the @"
    return _local_problem(local) or _domain_problem(domain)


def _unquoted_at(address: str) -> tuple[int, str]:
    """Where the one ``@`` outside double quotes is, or why there is not exactly one."""
    if '"' not in address:
        count = address.count("@")
        at = address.find("@")
    else:
        count, at, quoted, escaped = 0, -1, False, False
        for position, char in enumerate(address):
            if escaped:
                escaped = False
            elif quoted and char == "\\":
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif char == "@" and not quoted:
                count += 1
                at = position if at < 0 else at
        if quoted or escaped:
            return -1, "unbalanced double quotes"
    if count == 0:
        return -1, "no @"
    if count > 1:
        return -1, "more than one @ outside quotes"
    return at, ""


def _local_problem(local: str) -> str:
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        inner, escaped = local[1:-1], False
        for char in inner:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                return "quoted local part with a stray quote"
        if not inner.isprintable():
            return "control characters in the local part"
        return ""
    return _atoms_problem(local, "local part")


def _domain_problem(domain: str) -> str:
    if domain[0] == "[" and domain[-1] == "]":
        inner = domain[1:-1]
        if not inner or not inner.isprintable() or " " in inner or "[" in inner or "\\" in inner:
            return "malformed address literal in the domain"
        return ""
    if "" in domain.split("."):
        return "empty label in the domain"
    return _atoms_problem(domain, "domain")


def _atoms_problem(text: str, part: str) -> str:
    # isprintable() is False for every control, format and white-space character
    # but the plain space, which is caught on its own.
    if not text.isprintable() or " " in text:
        return f"white space or control characters in the {part}"
    if not _SPECIALS.isdisjoint(text):
        return f"a character not allowed unquoted in the {part}"
    return ""
