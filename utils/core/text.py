"""Quoting a user's value in an error message."""
from __future__ import annotations

import reprlib
from typing import Any

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 1, 4, 4, 40, 40


def short_repr(value: Any) -> str:
    """``repr`` cut to one short line, for a value quoted in an error message (a list that shares
    itself nine levels deep must not be expanded to billions of items while the message is formatted)."""
    return _SHORT.repr(value)
