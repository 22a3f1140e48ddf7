"""The one codec layer: Avro records from ``schemas/*.avsc``, in single-object encoding.

Wire format (Avro specification, "Single object encoding"): the two marker bytes ``C3 01``, the
8-byte CRC-64-AVRO fingerprint of the writer schema's parsing canonical form, then the Avro binary
body. No registry server is needed: every reader knows the schemas in ``schemas/`` and finds the
writer schema by its fingerprint, including older versions kept in ``schemas/released/``.

Agents, the client SDK, the worker SDK and the simulator-to-Kafka replay all encode and decode
through :data:`CODEC`.

Two libraries read the same ``.avsc`` files: fastavro parses them once for the schema's
canonical form and fingerprint (and the tests' compatibility checks); cavro, also compiled with
Cython, encodes and decodes the bodies. It writes the same bytes as fastavro (tests/unit/
test_codec.py checks every schema) at a third to a half of its cost: 5-11 us a record against
11-17 for encoding, 3-8 against 10-20 for decoding (docs/benchmarks/throughput.md, "Session 15").
A placed task takes one decode and three encodes on the scheduler's event loop.
"""

from __future__ import annotations

import json
from functools import cached_property
from importlib import resources
from typing import Any, Final

import cavro
from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from shunter.streams.errors import CodecError

MARKER: Final = b"\xc3\x01"
HEADER_LEN: Final = 10

# Named types other schemas refer to must be parsed first.
_ORDER: Final = ("PriorityClass", "ResourceHints")
_OPTIONS: Final = cavro.DEFAULT_OPTIONS.replace(
    record_decodes_to_dict=True,
    # As fastavro's writer: a field left out takes its default, else null where the type allows it.
    missing_values_can_be_null=True,
)


def _schema_texts() -> dict[str, dict[str, Any]]:
    root = resources.files("shunter.schemas")
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".avsc"):
            out[entry.name[: -len(".avsc")]] = json.loads(entry.read_text())
    return out


def _released_texts() -> list[dict[str, Any]]:
    root = resources.files("shunter.schemas").joinpath("released")
    if not root.is_dir():
        return []
    return [json.loads(e.read_text()) for e in sorted(root.iterdir(), key=lambda p: p.name)
            if e.name.endswith(".avsc")]


class AvroCodec:
    """Encodes dicts as single-object Avro and decodes any known writer schema back to dicts.

    Decoding resolves the writer schema (by fingerprint) against the current reader schema of the
    same name, so an old producer's message reads as today's record with defaults filled in.
    """

    def __init__(self) -> None:
        self.named: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}
        """fastavro's parsed schemas, by name (canonical form and fingerprint)."""
        texts = _schema_texts()
        external: dict[str, Any] = {}
        self._writers: dict[str, cavro.Schema] = {}
        """cavro's, by name: what encodes a record, and decodes what today's schema wrote."""
        for name in (*_ORDER, *(n for n in texts if n not in _ORDER)):
            self.schemas[name] = parse_schema(texts[name], named_schemas=self.named)
            self._writers[name] = cavro.Schema(texts[name], options=_OPTIONS.with_external_types(external))
            external.update(self._writers[name].named_types)
        self._prefix: dict[str, bytes] = {}
        self._by_fp: dict[bytes, tuple[str, Any]] = {}
        """Per writer fingerprint, the schema name and what decodes its bodies into today's record."""
        for name, parsed in self.schemas.items():
            fp = _fingerprint(parsed)
            self._prefix[name] = MARKER + fp
            self._by_fp[fp] = (name, self._writers[name])
        for text in _released_texts():
            fp = _fingerprint(parse_schema(text, named_schemas=dict(self.named)))
            name = text["name"].rsplit(".", 1)[-1]
            if fp not in self._by_fp:
                writer = cavro.Schema(text, options=_OPTIONS.with_external_types(external))
                current = self._writers.get(name)  # a schema no longer current reads as it was written
                self._by_fp[fp] = (name, current.reader_for_writer(writer) if current is not None else writer)

    @cached_property
    def record_names(self) -> list[str]:
        return [n for n, s in self.schemas.items() if isinstance(s, dict) and s.get("type") == "record"]

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Encode ``record`` with the current schema ``name``; raise CodecError if it does not fit."""
        try:
            writer = self._writers[name]
        except KeyError:
            raise CodecError(f"no schema named {name!r}; known: {', '.join(self.record_names)}") from None
        try:
            return self._prefix[name] + writer.binary_encode(record)
        except (cavro.CavroException, ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise CodecError(f"{name} record does not fit its schema: {exc}") from exc

    def decode(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """Return ``(schema name, record)``; raise CodecError for bytes that are not one of ours."""
        if not data or len(data) < HEADER_LEN or data[:2] != MARKER:
            raise CodecError("not an Avro single-object message (missing C3 01 marker)")
        fp = bytes(data[2:HEADER_LEN])
        known = self._by_fp.get(fp)
        if known is None:
            raise CodecError(f"unknown writer schema fingerprint {fp.hex()}")
        name, reader = known
        try:
            record = reader.binary_decode(bytes(data[HEADER_LEN:]))
        except Exception as exc:  # noqa: BLE001 - a decoder raises many types on corrupt input
            raise CodecError(f"corrupt {name} body: {type(exc).__name__}: {exc}") from exc
        if not isinstance(record, dict):
            raise CodecError(f"{name} did not decode to a record")
        return name, record

    def decode_as(self, name: str, data: bytes | None) -> dict[str, Any]:
        got, record = self.decode(data)
        if got != name:
            raise CodecError(f"expected a {name} message, got {got}")
        return record


def _fingerprint(parsed: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


CODEC: Final = AvroCodec()
