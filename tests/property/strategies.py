"""Hypothesis strategies for bad input at the edges: bytes, wrong JSON, mutated contract values.

A :class:`Case` is either raw bytes (sent as they are) or a JSON object derived from a
valid seed (sent after :func:`render` gives it a fresh event id, so at-least-once
de-duplication never hides a record and "ends in exactly one place" stays checkable).
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Path = tuple[str, ...]

_ids = itertools.count()

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

#: Fixed awkward payloads: empty, JSON that is not an object, BOM, numbers out of range, NaN, lone surrogates.
ODD_BYTES = [
    b"",
    b"null",
    b"{}",
    b"[]",
    b'"text"',
    b"1e999999",
    b"NaN",
    b"\xef\xbb\xbf{}",
    b'{"a":1,"a":2}',
    b'{"text":"\\ud800"}',
    b"\x00" * 64,
    b"{" * 10,
]


def dumps(value: Any) -> bytes:
    """JSON bytes; the standard library, because orjson refuses integers beyond 64 bits."""
    return json.dumps(value, ensure_ascii=False).encode()


@dataclass(frozen=True)
class Case:
    """One input: ``raw`` bytes, or ``obj`` (a JSON object) whose id at ``id_path`` is refreshed on render."""

    label: str
    raw: bytes | None = None
    obj: Any = None
    id_path: Path | None = None
    inject: bytes | None = None

    def __repr__(self) -> str:
        shown = self.raw[:120] if self.raw is not None else repr(self.obj)[:300]
        return f"Case({self.label}, {shown!r})"


def render(case: Case) -> bytes:
    """The bytes of a case; an object gets a fresh id (where its id is still a string)."""
    if case.raw is not None:
        return case.raw
    obj = copy.deepcopy(case.obj)
    if case.id_path is not None:
        parent = _parent(obj, case.id_path)
        if isinstance(parent, dict) and isinstance(parent.get(case.id_path[-1]), str):
            parent[case.id_path[-1]] = f"prop-{next(_ids)}"
    body = dumps(obj)
    if case.inject is not None:
        # Invalid UTF-8 inside a string value of otherwise valid JSON.
        at = body.find(b'":"')
        body = body[: at + 3] + case.inject + body[at + 3 :] if at >= 0 else body + case.inject
    return body


def _parent(obj: Any, path: Path) -> Any:
    for part in path[:-1]:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _paths(seed: dict[str, Any]) -> list[Path]:
    out: list[Path] = []
    for key, value in seed.items():
        out.append((key,))
        if isinstance(value, dict):
            out.extend((key, inner) for inner in value)
    return out


@st.composite
def mutated(draw: st.DrawFn, seed: dict[str, Any], id_path: Path) -> Case:
    """The seed with one field replaced by any JSON value, removed, or joined by an unknown field."""
    obj = copy.deepcopy(seed)
    path = draw(st.sampled_from(_paths(seed)))
    parent = _parent(obj, path)
    op = draw(st.sampled_from(["replace", "remove", "extra"]))
    if op == "replace":
        value_strategy = json_values
        if path == id_path:
            # An id replaced by another string would be a valid record again (tested as such elsewhere).
            value_strategy = json_values.filter(lambda v: not isinstance(v, str))
        parent[path[-1]] = draw(value_strategy)
    elif op == "remove":
        del parent[path[-1]]
    else:
        parent[f"zz_{draw(st.text(min_size=1, max_size=8))}"] = draw(json_values)
    return Case(f"{op}:{'.'.join(path)}", obj=obj, id_path=id_path)


def bad_input(seed: dict[str, Any], id_path: Path) -> st.SearchStrategy[Case]:
    """Every kind of bad (and some valid) record value for a consumer whose contract ``seed`` satisfies."""
    text_path = next((p for p in _paths(seed) if p[-1] == "text"), None)
    huge = copy.deepcopy(seed)
    if text_path is not None:
        _parent(huge, text_path)[text_path[-1]] = "a" * 1_000_000
    return st.one_of(
        st.just(Case("valid", obj=seed, id_path=id_path)),
        st.just(Case("valid", obj=seed, id_path=id_path)),
        mutated(seed, id_path),
        mutated(seed, id_path),
        st.binary(max_size=300).map(lambda b: Case("bytes", raw=b)),
        json_values.map(lambda v: Case("json", raw=dumps(v))),
        st.sampled_from(ODD_BYTES).map(lambda b: Case("odd", raw=b)),
        st.integers(min_value=1, max_value=100_000).map(lambda n: Case("deep-array", raw=b"[" * n + b"]" * n)),
        st.integers(min_value=1, max_value=5_000).map(
            lambda n: Case("deep-object", raw=b'{"a":' * n + b"1" + b"}" * n)
        ),
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]).map(
            lambda bad: Case("invalid-utf8", obj=seed, id_path=id_path, inject=bad)
        ),
        st.just(Case("huge-text", obj=huge, id_path=id_path)),
    )


#: Kafka record headers as producers send them: any names, any bytes (CR/LF, NUL, invalid UTF-8).
record_headers = st.lists(
    st.tuples(st.text(max_size=20), st.binary(max_size=40) | st.sampled_from([b"\r\nX-Injected: 1", b"\xff\xfe"])),
    max_size=4,
)
record_keys = st.none() | st.binary(max_size=40)
