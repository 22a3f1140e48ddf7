"""The audit chain: each record carries the hash of the one before it in its cell.

``hash = sha256(canonical bytes of the record without 'hash')``, the record including
``prev_hash``. Verification walks records in order and reports the first sequence number whose
hash or link does not hold.

How the canonical bytes are formed is versioned by the record's ``hash_version``, which the hash
covers: 1 is ``json.dumps`` with sorted keys (every record written before the field existed, read
back as 1, without the field in its bytes), 2 is orjson with sorted keys. Both are JSON of the same
record; 2 costs about an eighth of 1 (7.5 against 57 us for a decision with 16 candidates), which
was a quarter of a decision's time with explanations on.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final, Iterable

import orjson

GENESIS = "0" * 64
HASH_VERSION: Final = 2
"""The canonical form new records are sealed with."""


def _bytes_as_text(o: Any) -> Any:
    if isinstance(o, bytes):
        return base64.b64encode(o).decode()
    raise TypeError(type(o).__name__)


def _canonical(record: dict[str, Any]) -> bytes:
    version = record.get("hash_version") or 1
    if version == 1:
        body = {k: v for k, v in record.items() if k not in ("hash", "hash_version")}
        return json.dumps(body, sort_keys=True, separators=(",", ":"), default=_bytes_as_text).encode()
    body = {k: v for k, v in record.items() if k != "hash"}
    if version == 2:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=_bytes_as_text)
    raise ValueError(f"unknown hash_version {version!r}")


def record_hash(record: dict[str, Any]) -> str:
    """Raises ValueError for a ``hash_version`` this code does not know."""
    return hashlib.sha256(_canonical(record)).hexdigest()


def hash_holds(record: dict[str, Any]) -> bool:
    """The record's hash matches its content. A version this code does not know never holds: any
    fixed bytes standing in for it would let a forger write that one hash on every record."""
    try:
        return record_hash(record) == record["hash"]
    except ValueError:
        return False


@dataclass
class AuditChain:
    """The head of one cell's chain: the next sequence number and the last hash."""

    seq: int = 0
    last_hash: str = GENESIS

    def seal(self, record: dict[str, Any]) -> dict[str, Any]:
        """Number and hash ``record`` (a copy), advancing the head."""
        sealed = dict(record)
        self.seq += 1
        sealed["seq"] = self.seq
        sealed["prev_hash"] = self.last_hash
        sealed["hash_version"] = HASH_VERSION
        sealed["hash"] = record_hash(sealed)
        self.last_hash = sealed["hash"]
        return sealed


@dataclass
class ChainBreak:
    cell: str
    seq: int
    problem: str


def verify(records: Iterable[dict[str, Any]]) -> tuple[int, list[ChainBreak]]:
    """Check every cell's chain in ``records`` (in log order). Returns (records checked, breaks).

    Outputs are at-least-once, so a record may appear again after it was first seen (a new owner
    re-sends its last batch). A repeat identical to the record first seen at that sequence number
    is a redelivery, not a break; a different record at a seen sequence number is a break.
    """
    heads: dict[str, tuple[int, str]] = {}
    seen: dict[tuple[str, int], str] = {}
    checked = 0
    breaks: list[ChainBreak] = []
    for r in records:
        checked += 1
        cell = r["cell"]
        seq, prev = heads.get(cell, (0, GENESIS))
        first = seen.get((cell, r["seq"]))
        if first is not None:
            if first != r["hash"] or not hash_holds(r):
                breaks.append(ChainBreak(cell, r["seq"], "a different record repeats an earlier sequence number"))
            continue
        if r["seq"] != seq + 1:
            breaks.append(ChainBreak(cell, r["seq"], f"expected seq {seq + 1}"))
        elif r["prev_hash"] != prev:
            breaks.append(ChainBreak(cell, r["seq"], "prev_hash does not match the previous record"))
        elif not hash_holds(r):
            breaks.append(ChainBreak(cell, r["seq"], "hash does not match the record's content (the record was changed)"))
        seen[(cell, r["seq"])] = r["hash"]
        heads[cell] = (r["seq"], r["hash"])
    return checked, breaks
