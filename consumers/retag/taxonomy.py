"""Taxonomy and threshold files (pure: parsing, validation, the mapping's version).

A taxonomy turns model labels into the terms of a DAM (docs/library.md, "Retag and taxonomy")::

    terms:              # model label -> one or more DAM terms (default: the label itself)
      automobile: car
      puppy: [dog, young animal]
    synonyms:           # DAM term -> other names it is also found under (added as tags)
      car: [auto]
    parents:            # DAM term -> its parent; every ancestor is added
      car: vehicle
      vehicle: transport
    drop: [blurry]      # model labels that never become tags

A problem names the entry at fault and, for a YAML or JSON file, its line.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class MappingFileError(ValueError):
    """A taxonomy or threshold file (or flag) that cannot be used; the message says where."""


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("an empty name")
    if value != value.strip():
        raise ValueError(f"{value!r} has leading or trailing spaces")
    return value


Name = Annotated[str, AfterValidator(_name)]
Names = Annotated[list[Name], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]


def _some(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("maps to no term")
    return value


class Taxonomy(BaseModel):
    """A validated taxonomy (see the module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int | str | None = Field(None, description="free-form; part of the content hash")
    terms: dict[Name, Annotated[Names, AfterValidator(_some)]] = Field(default_factory=dict)
    synonyms: dict[Name, Annotated[Names, AfterValidator(_some)]] = Field(default_factory=dict)
    parents: dict[Name, Name] = Field(default_factory=dict)
    drop: list[Name] = Field(default_factory=list)

    @field_validator("parents", mode="after")
    @classmethod
    def _not_own(cls, value: dict[str, str]) -> dict[str, str]:
        for child, parent in value.items():
            if child == parent:
                raise ValueError(f"{child!r} is its own parent")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Taxonomy:
        both = sorted(set(self.drop) & set(self.terms))
        if both:
            raise ValueError(f"label {both[0]!r} is both mapped (terms) and dropped (drop)")
        for start in self.parents:
            seen = [start]
            node = start
            while node in self.parents:
                node = self.parents[node]
                if node in seen:
                    cycle = " -> ".join([*seen[seen.index(node) :], node])
                    raise ValueError(f"parents: {start!r} is in a cycle: {cycle}")
                seen.append(node)
        return self

    def ancestors(self, term: str) -> list[str]:
        """``term``'s parent, its parent's parent, ... (validation rules out cycles)."""
        out = []
        while term in self.parents:
            term = self.parents[term]
            out.append(term)
        return out

    def expand(self, label: str) -> list[str]:
        """The DAM terms one model label stands for, in order, without repeats: its terms (or
        itself), each followed by its synonyms and then its ancestors (with theirs); nothing
        for a dropped label."""
        if label in self.drop:
            return []
        out: list[str] = []
        for term in self.terms.get(label, [label]):
            for name in [term, *self.ancestors(term)]:
                for t in [name, *self.synonyms.get(name, [])]:
                    if t not in out:
                        out.append(t)
        return out


def _line_of(node: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """The 1-based line of the entry at ``loc`` (a pydantic error location) in a composed
    YAML document; the deepest entry found on the way when ``loc`` goes further."""
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _read(path: Path, what: str) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingFileError(f"{path}: cannot read the {what}: {exc}") from exc
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MappingFileError(f"{path}:{where}: not YAML or JSON: {problem}") from exc


def parse_taxonomy(data: Any, source: str = "taxonomy", node: yaml.Node | None = None) -> Taxonomy:
    """A :class:`Taxonomy` from parsed YAML/JSON; :class:`MappingFileError` naming the entry
    (and its line when ``node``, the composed document, is given)."""
    if not isinstance(data, Mapping):
        raise MappingFileError(
            f"{source}: a taxonomy is a mapping with terms, synonyms, parents, drop"
        )
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc: list[Any] = [p for p in error["loc"] if p != "[key]"]
        message = error["msg"].removeprefix("Value error, ")
        line = _line_of(node, _named(data, loc, message)) if node is not None else None
        where = f" line {line}" if line else ""
        entry = ".".join(str(p) for p in loc) or "(top level)"
        raise MappingFileError(f"{source}:{where}: {entry}: {message}") from exc


def _named(data: Mapping[str, Any], loc: list[Any], message: str) -> list[Any]:
    """``loc`` made to point at the entry a section-wide check names (``'x'`` in the message:
    a cycle, a label both mapped and dropped), so that its line is the one reported."""
    if len(loc) > 1:
        return loc
    named = re.search(r"'([^']+)'", message)
    if named is None:
        return loc
    for section in loc or ["parents", "terms", "drop"]:
        entries = data.get(section)
        if isinstance(entries, Mapping) and named.group(1) in entries:
            return [section, named.group(1)]
        if isinstance(entries, list) and named.group(1) in entries:
            return [section, entries.index(named.group(1))]
    return loc


def load_taxonomy(path: Path) -> Taxonomy:
    """Read and validate a taxonomy file (YAML or JSON)."""
    data, node = _read(path, "taxonomy")
    return parse_taxonomy(data, str(path), node)


def _threshold(label: Any, value: Any, source: str) -> float:
    if not isinstance(label, str) or not label:
        raise MappingFileError(f"{source}: label {label!r} is not a non-empty name")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MappingFileError(
            f"{source}: the threshold of {label!r} is {value!r}, not a number"
        ) from None
    if isinstance(value, bool) or math.isnan(number) or not 0.0 <= number <= 1.0:
        raise MappingFileError(f"{source}: the threshold of {label!r} is {value!r}, not in 0..1")
    return number


def load_thresholds(path: Path) -> dict[str, float]:
    """A threshold file: a YAML or JSON mapping label -> threshold in 0..1 (``"*"``: every
    label without its own)."""
    data, node = _read(path, "threshold file")
    if not isinstance(data, Mapping):
        raise MappingFileError(f"{path}: a threshold file is a mapping label -> threshold")
    out = {}
    for label, value in data.items():
        line = _line_of(node, [label])
        out[label] = _threshold(label, value, f"{path}: line {line}" if line else str(path))
    return out


def parse_threshold_flags(flags: Sequence[str]) -> dict[str, float]:
    """``LABEL=0.4`` flags (repeatable; the last one of a label wins)."""
    out = {}
    for flag in flags:
        label, sep, value = flag.rpartition("=")
        if not sep or not label:
            raise MappingFileError(f"--threshold {flag!r}: expected LABEL=VALUE, e.g. cat=0.4")
        out[label] = _threshold(label, value, f"--threshold {flag!r}")
    return out


def mapping_version(taxonomy: Taxonomy | None, thresholds: Mapping[str, float]) -> str:
    """The content hash of a mapping (taxonomy and thresholds): 16 hex digits of SHA-256 over
    their canonical JSON, so the same content gets the same version wherever it is run."""
    doc = {
        "taxonomy": None if taxonomy is None else taxonomy.model_dump(mode="json"),
        "thresholds": {k: float(v) for k, v in sorted(thresholds.items())},
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
