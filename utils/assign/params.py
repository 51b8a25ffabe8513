"""The frozen hyper-parameter dataclasses of matching rules and loss strategies: fields are hyp-YAML keys.

It sits below both ``utils/assign`` and ``utils/loss`` so that a rule (one file in ``utils/assign/``)
declares its own keys, defaults and ranges the way a loss does; ``utils.hyp`` checks them once
for the whole file.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar

from utils.core.text import short_repr


# Allowed values of a hyp key as interval notation: zero is refused where the code divides by the value,
# a negative where it has no meaning, 1 where a momentum would never forget.
POSITIVE, NON_NEGATIVE, FRACTION, BELOW_ONE = "(0, inf)", "[0, inf)", "[0, 1]", "[0, 1)"


@dataclasses.dataclass(frozen=True)
class HypParams:
    """Base of the per-rule and per-strategy hyper-parameter dataclasses; fields are hyp-YAML keys.

    ``RANGES`` (key -> interval) sits beside the fields it bounds and is merged down the class
    hierarchy (:meth:`ranges`); ``utils.hyp`` checks it once for the whole file. Rules that
    an interval cannot say go in ``__post_init__``.
    """

    RANGES: ClassVar[dict[str, str]] = {}

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def ranges(cls) -> dict[str, str]:
        """Every key's interval, a subclass's entries over its bases'."""
        out: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("RANGES", {}))
        return out

    @classmethod
    def from_hyp(cls, hyp: dict[str, Any]) -> "HypParams":
        """Pick this strategy's keys out of a hyp dict (absent keys take the defaults).

        A value of the wrong type is a ``ValueError`` naming the key.
        """
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in hyp:
                continue
            v = hyp[f.name]
            if isinstance(f.default, bool):
                if not isinstance(v, bool) and "str" not in str(f.type):  # ``bool | str`` keys check in __post_init__
                    raise ValueError(f"hyp key '{f.name}' must be true or false, got {short_repr(v)}")
            elif isinstance(f.default, int):
                if isinstance(v, bool) or not (isinstance(v, numbers.Integral)
                                               or (isinstance(v, float) and v.is_integer())):
                    raise ValueError(f"hyp key '{f.name}' must be a whole number, got {short_repr(v)}")
                v = int(v)
            elif isinstance(f.default, numbers.Real) and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                raise ValueError(f"hyp key '{f.name}' must be a number, got {short_repr(v)}")
            values[f.name] = type(f.default)(v) if isinstance(f.default, float) else v
        return cls(**values)
