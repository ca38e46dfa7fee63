# SPDX-License-Identifier: Apache-2.0
"""The one canonical JSON form of everything signed: RFC 8785 (JCS).

Signatures (journal records, commands, desired configuration, ``tx/ack``)
cover these bytes, so a back office in Java, Go or JavaScript reproduces
them with any JCS implementation; here the ``rfc8785`` package does it.

    canonical({"b": 1.0, "a": "é"})      # b'{"a":"\\xc3\\xa9","b":1}'
    signed_form(doc)                      # what the signature covers, by the doc's own marker

A signed document says which form it was signed in: ``"canon": "jcs"``,
itself covered by the signature (so it cannot be stripped or added without
breaking it). A document without the marker was signed before JCS, in
:func:`legacy_canonical` (CPython's ``json.dumps`` with sorted keys), and
still verifies in that form; nothing new is produced in it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import rfc8785

from agent.errors import AgentError

__all__ = ["CANON", "CANON_FIELD", "CanonicalError", "canonical", "form_of", "legacy_canonical",
           "signed_form"]

CANON_FIELD = "canon"
CANON = "jcs"


class CanonicalError(AgentError, ValueError):
    """The object has no canonical form (NaN, an integer beyond ±2^53-1, a lone surrogate, not JSON).

    A ValueError too: a verifier treats it like any other undecodable input.
    """

    code = "wire.not_canonical"


_SAFE_INT = 2**53 - 1


def _json_dumps_agrees(obj: Any) -> bool:
    """True if ``json.dumps`` gives exactly the JCS bytes of ``obj``.

    It does for strings, booleans, null, integers within ±(2^53-1) and
    objects whose keys sort the same by code point as by UTF-16 code unit
    (all below U+D800); floats and anything else go to ``rfc8785``.
    A property test holds the two equal.
    """
    stack = [obj]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_SAFE_INT <= item <= _SAFE_INT:
                continue
            return False
        if kind is dict:
            for key in item:
                if type(key) is not str or not (key.isascii() or max(key) < "\ud800"):
                    return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        else:
            return False
    return True


def _refuse(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _sorted_compact_encoder() -> Callable[[Any], str]:
    """``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, built once.

    ``json.dumps`` with arguments builds a JSONEncoder and CPython's C encoder
    on every call: a third of its time for a record. The C encoder is kept
    and reused (it holds no state between calls without a circularity
    check, which is not needed: ``_json_dumps_agrees`` walks the object
    first, and a cycle would never let that walk finish).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:        # no C accelerator: the plain call
        return lambda obj: json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    encoder = make(None, _refuse, json.encoder.encode_basestring, None, ":", ",", True, False, True)
    return lambda obj: "".join(encoder(obj, 0))


_dumps_sorted = _sorted_compact_encoder()


def canonical(obj: Any) -> bytes:
    """RFC 8785 bytes of ``obj``; raises CanonicalError if it has none.

    Through CPython's C encoder where its output is provably the same (a
    transaction of strings and integers: ~3 µs instead of ~16 µs, which the
    journal's rate in ``bench/outbox.py`` and the ledger's verification
    need), else through ``rfc8785``.

    >>> canonical({"b": [1.5, 1e21, 10.0], "a": None})
    b'{"a":null,"b":[1.5,1e+21,10]}'
    """
    try:
        if _json_dumps_agrees(obj):
            return _dumps_sorted(obj).encode("utf-8")
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, UnicodeEncodeError) as exc:
        raise CanonicalError(f"not canonically encodable: {exc}") from exc


def legacy_canonical(obj: Any) -> bytes:
    """The pre-JCS form, kept only to verify documents without the ``canon`` marker.

    JSON with keys sorted by code point, separators ``,`` and ``:``,
    non-ASCII as UTF-8, NaN refused; floats as CPython's ``repr``.
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise CanonicalError(f"not canonically encodable: {exc}") from exc


def form_of(doc: dict[str, Any]) -> Callable[[Any], bytes]:
    """The encoding ``doc`` says it was signed in: JCS with ``"canon": "jcs"``, legacy without a marker.

    Any other marker raises CanonicalError.
    """
    marker = doc.get(CANON_FIELD)
    if marker == CANON:
        return canonical
    if CANON_FIELD not in doc:
        return legacy_canonical
    raise CanonicalError(f"unknown canonical form {str(marker)[:20]!r}")


def signed_form(doc: dict[str, Any]) -> bytes:
    """The bytes a signature over ``doc`` covers (before its domain tag): ``doc`` without ``sig``, in its form."""
    return form_of(doc)({k: v for k, v in doc.items() if k != "sig"})
