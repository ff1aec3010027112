"""Text from rows made safe for a person's terminal (design.md, "Trust").

Workflow ids, bucket names, errors and any other string a row carries are written by whoever
can reach the socket or the data dir. Printed raw, an escape sequence in one would drive the
terminal (recolour, retitle, move the cursor) and a bidi override would make one id read as
another. Layer 1, stdlib only: every renderer and every message that echoes row text uses it.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every character `str.isprintable` refuses spelled as its Python escape.

    That covers C0 controls (ESC, CR, LF, TAB), DEL, C1 controls, bidi overrides and isolates
    (U+202A-U+202E, U+2066-U+2069) and other invisible format characters: `\\x1b`,
    `\\u202e`. Ordinary text, accents and scripts included, is unchanged.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
