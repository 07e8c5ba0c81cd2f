"""Text in request bodies must be text: a lone UTF-16 surrogate (``"\\ud800"``) is valid
JSON but cannot be encoded as UTF-8, so it could be neither logged, echoed in an error
nor hashed for a request id (it was a 500). The request models refuse it first."""

from __future__ import annotations

from typing import Any


def refuse_lone_surrogates(value: Any) -> Any:
    """`value` (a parsed JSON body), refused if any of its strings holds a lone UTF-16
    surrogate (``"\\ud800"`` is valid JSON but no text: it cannot be encoded, logged
    or echoed). The request models run it on their whole input first."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = value.encode("utf-8", "backslashreplace").decode()[:60]
            raise ValueError(f"text must be valid Unicode, not {shown!r}") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            refuse_lone_surrogates(k)
            refuse_lone_surrogates(v)
    elif isinstance(value, list):
        for v in value:
            refuse_lone_surrogates(v)
    return value
