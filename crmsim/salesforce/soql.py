"""A small SOQL subset: tokenizer, recursive-descent parser and evaluator.

Supported: ``SELECT`` fields (``COUNT()``, ``COUNT(Id)``, parent fields such as ``Owner.Name``),
``FROM``, ``WHERE`` with ``AND``/``OR``/``NOT`` and parentheses (mixing AND and OR at one level
is rejected, as Salesforce does), ``= != <> < <= > >=``, ``IN``/``NOT IN``, ``LIKE``, ``null``,
``true``/``false``, quoted strings with escapes, numbers, dateTime literals (optional 1-6 digit
fraction, ``Z``/``±hh:mm``/``±hhmm``), date literals, ``ORDER BY`` several fields with
``ASC``/``DESC`` and ``NULLS FIRST``/``LAST``, ``LIMIT`` and ``OFFSET``.

Errors are :class:`SoqlError` with a Salesforce ``errorCode``: ``MALFORMED_QUERY`` (syntax),
``INVALID_FIELD`` (unknown column, wrong literal type), ``INVALID_TYPE`` (unknown sObject).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from crmsim.salesforce.schema import SOBJECTS, FieldDef


class SoqlError(Exception):
    """A query Salesforce would refuse: ``code`` is the REST ``errorCode``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\w:]))
  | (?P<number>[+-]?\d+(?:\.\d+)?(?![\w]))
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),:])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\",
            "_": "\\_", "%": "\\%"}
_KEYWORDS = {"select", "from", "where", "and", "or", "not", "in", "like", "order", "by", "asc", "desc",
             "nulls", "first", "last", "limit", "offset", "null", "true", "false", "count", "includes",
             "excludes", "group", "having"}


@dataclass
class Token:
    kind: str  # ident, keyword, string, number, datetime, date, op, punct, eof
    text: str
    pos: int
    value: Any = None


def _line_col(text: str, pos: int) -> tuple[int, int]:
    row = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return row, col


def _malformed(text: str, pos: int, message: str, code: str = "MALFORMED_QUERY") -> SoqlError:
    row, col = _line_col(text, pos)
    line = text.splitlines()[row - 1] if text.splitlines() else ""
    caret = " " * (col - 1) + "^"
    return SoqlError(code, f"\n{line}\n{caret}\nERROR at Row:{row}:Column:{col}\n{message}")


def _unescape(body: str, text: str, pos: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in _ESCAPES:
                raise _malformed(text, pos, f"Invalid string literal '{body}'. Illegal character sequence "
                                             f"'\\{nxt}' in string literal.")
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def parse_datetime_literal(literal: str) -> datetime:
    """A SOQL dateTime literal as an aware UTC datetime; SOQL ignores the fraction of a second."""
    match = re.match(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:?\d{2})$",
                     literal)
    if not match:
        raise ValueError(literal)
    year, month, day, hour, minute, second, frac, zone = match.groups()
    micro = int((frac or "0").ljust(6, "0"))
    result = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=UTC)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        result -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return result.replace(microsecond=0)


def tokenize(text: str) -> list[Token]:
    """Split SOQL into tokens; MALFORMED_QUERY on characters SOQL does not allow."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match:
            char = text[pos]
            raise _malformed(text, pos, f"unexpected token: '{char}'")
        kind = match.lastgroup or ""
        raw = match.group()
        if kind != "ws":
            token = Token(kind, raw, pos)
            try:
                if kind == "ident" and raw.lower() in _KEYWORDS:
                    token.kind = "keyword"
                    token.value = raw.lower()
                elif kind == "string":
                    token.value = _unescape(raw[1:-1], text, pos)
                elif kind == "number":
                    token.value = float(raw) if "." in raw else int(raw)
                elif kind == "datetime":
                    token.value = parse_datetime_literal(raw)
                elif kind == "date":
                    token.value = date.fromisoformat(raw)
            except ValueError:
                raise _malformed(text, pos, f"line 1:{pos} no viable alternative at character '{raw}'") from None
            tokens.append(token)
        pos = match.end()
    tokens.append(Token("eof", "<EOF>", len(text)))
    return tokens


# ---------------------------------------------------------------------- syntax tree
@dataclass
class FieldRef:
    path: str  # as written, e.g. "Owner.Name"
    pos: int


@dataclass
class Literal:
    kind: str  # string, number, datetime, date, boolean, null
    value: Any
    pos: int
    text: str


@dataclass
class Compare:
    field: FieldRef
    op: str  # = != < <= > >= in notin like
    values: list[Literal]


@dataclass
class BoolOp:
    op: str  # and, or
    items: list[Any]


@dataclass
class Not:
    item: Any


@dataclass
class OrderItem:
    field: FieldRef
    descending: bool = False
    nulls_last: bool | None = None


@dataclass
class Query:
    sobject: str
    sobject_pos: int
    fields: list[FieldRef]
    count: str | None = None  # "COUNT()" or field name of COUNT(field)
    where: Any = None
    order: list[OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, token: Token | None = None) -> SoqlError:
        token = token or self.peek()
        return _malformed(self.text, token.pos, f"unexpected token: {token.text}"
                          if token.kind == "eof" else f"unexpected token: '{token.text}'")

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "keyword" and token.value in words

    def expect_keyword(self, word: str) -> Token:
        if not self.keyword(word):
            raise self.fail()
        return self.take()

    def expect_punct(self, char: str) -> Token:
        token = self.peek()
        if token.kind != "punct" or token.text != char:
            raise self.fail()
        return self.take()

    def parse(self) -> Query:
        self.expect_keyword("select")
        fields: list[FieldRef] = []
        count: str | None = None
        while True:
            token = self.peek()
            if self.keyword("count"):
                self.take()
                self.expect_punct("(")
                if self.peek().kind == "ident":
                    count = self.take().text
                else:
                    count = "COUNT()"
                self.expect_punct(")")
            elif token.kind == "ident":
                fields.append(FieldRef(self.take().text, token.pos))
            else:
                raise self.fail()
            if self.peek().kind == "punct" and self.peek().text == ",":
                self.take()
                continue
            break
        if count == "COUNT()" and fields:
            raise _malformed(self.text, fields[0].pos, "COUNT() cannot be combined with other fields",
                             "MALFORMED_QUERY")
        self.expect_keyword("from")
        obj = self.peek()
        # Group and Order are sObjects as well as SOQL keywords; right after FROM they are names.
        named_keyword = obj.kind == "keyword" and obj.value in ("group", "order")
        if not named_keyword and (obj.kind != "ident" or "." in obj.text):
            raise self.fail()
        self.take()
        query = Query(obj.text, obj.pos, fields, count)
        if self.keyword("where"):
            self.take()
            query.where = self.condition()
        if self.keyword("group", "having"):
            raise self.fail()
        if self.keyword("order"):
            self.take()
            self.expect_keyword("by")
            while True:
                token = self.peek()
                if token.kind != "ident":
                    raise self.fail()
                item = OrderItem(FieldRef(self.take().text, token.pos))
                if self.keyword("asc", "desc"):
                    item.descending = self.take().value == "desc"
                if self.keyword("nulls"):
                    self.take()
                    if not self.keyword("first", "last"):
                        raise self.fail()
                    item.nulls_last = self.take().value == "last"
                query.order.append(item)
                if self.peek().kind == "punct" and self.peek().text == ",":
                    self.take()
                    continue
                break
        if self.keyword("limit"):
            self.take()
            query.limit = self.whole_number()
        if self.keyword("offset"):
            self.take()
            query.offset = self.whole_number()
        if self.peek().kind != "eof":
            raise self.fail()
        return query

    def whole_number(self) -> int:
        token = self.peek()
        if token.kind != "number" or not isinstance(token.value, int) or token.value < 0:
            raise self.fail()
        self.take()
        return int(token.value)

    def condition(self) -> Any:
        items = [self.unary()]
        op: str | None = None
        while self.keyword("and", "or"):
            token = self.take()
            if op is not None and token.value != op:
                raise self.fail(token)
            op = token.value
            items.append(self.unary())
        return items[0] if op is None else BoolOp(op, items)

    def unary(self) -> Any:
        if self.keyword("not"):
            self.take()
            return Not(self.unary())
        token = self.peek()
        if token.kind == "punct" and token.text == "(":
            self.take()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Compare:
        token = self.peek()
        if token.kind != "ident":
            raise self.fail()
        ref = FieldRef(self.take().text, token.pos)
        nxt = self.peek()
        if nxt.kind == "op":
            self.take()
            op = {"<>": "!="}.get(nxt.text, nxt.text)
            return Compare(ref, op, [self.literal()])
        if self.keyword("like"):
            self.take()
            return Compare(ref, "like", [self.literal()])
        negate = False
        if self.keyword("not"):
            self.take()
            negate = True
            if not self.keyword("in"):
                raise self.fail()
        if self.keyword("in"):
            self.take()
            self.expect_punct("(")
            if self.keyword("select"):
                raise self.fail()
            values = [self.literal()]
            while self.peek().kind == "punct" and self.peek().text == ",":
                self.take()
                values.append(self.literal())
            self.expect_punct(")")
            return Compare(ref, "notin" if negate else "in", values)
        raise self.fail()

    def literal(self) -> Literal:
        token = self.peek()
        if token.kind in ("string", "number", "datetime", "date"):
            self.take()
            return Literal(token.kind, token.value, token.pos, token.text)
        if self.keyword("null"):
            self.take()
            return Literal("null", None, token.pos, token.text)
        if self.keyword("true", "false"):
            self.take()
            return Literal("boolean", token.value == "true", token.pos, token.text)
        raise self.fail()


def parse(text: str) -> Query:
    """Parse SOQL text into a :class:`Query`; raises MALFORMED_QUERY."""
    if not text or not text.strip():
        raise SoqlError("MALFORMED_QUERY", "\nERROR at Row:1:Column:1\nunexpected token: <EOF>")
    return _Parser(text).parse()


# ---------------------------------------------------------------------- binding and evaluation
Values = Mapping[str, Any]
Lookup = Callable[[str], "Values | None"]  # record id -> values of the referenced record (or None)
FieldsOf = Callable[[str], Mapping[str, FieldDef]]  # sObject name -> visible fields by lower name

_STRINGY = {"string", "picklist", "email", "phone", "textarea", "combobox", "url", "id", "reference",
            "multipicklist"}
_NUMERIC = {"double", "currency", "percent", "int"}


@dataclass
class BoundField:
    """A resolved field reference: output name(s), type and value getter."""

    name: str  # canonical leaf name
    relationship: str | None  # canonical relationship name for parent fields
    fdef: FieldDef
    getter: Callable[[Values], Any]
    target_types: tuple[str, ...] = ()


@dataclass
class CompiledQuery:
    """A query bound to the org's metadata, ready to filter, sort and project records."""

    sobject: str
    select: list[BoundField]
    count_only: bool
    count_field: bool
    predicate: Callable[[Values], bool]
    order: list[tuple[Callable[[Values], Any], bool, bool]]  # key getter, descending, nulls_last
    limit: int | None
    offset: int | None
    # Bounds (inclusive, None = open) every selected row's SystemModstamp lies within, implied by
    # the WHERE clause; and whether ORDER BY is exactly SystemModstamp ASC[, Id ASC]. Together
    # they let the store bisect an index instead of scanning (crmsim.salesforce.selection).
    stamp_range: tuple[datetime | None, datetime | None] = (None, None)
    keyset_order: bool = False


_STAMP = "systemmodstamp"


def stamp_range(node: Any) -> tuple[datetime | None, datetime | None]:
    """Inclusive (lower, upper) bounds on ``SystemModstamp`` that every row matching ``node`` meets.

    Sound, not tight: an AND takes the narrowest bound of its parts, an OR the widest (and none if
    one part is unbounded), NOT and other fields bound nothing.
    """
    if isinstance(node, Compare):
        if node.field.path.lower() != _STAMP or node.values[0].kind != "datetime":
            return None, None
        value = node.values[0].value
        if node.op in (">", ">="):
            return value, None
        if node.op in ("<", "<="):
            return None, value
        if node.op == "=":
            return value, value
        return None, None
    if isinstance(node, BoolOp):
        parts = [stamp_range(item) for item in node.items]
        lowers = [low for low, _ in parts if low is not None]
        uppers = [high for _, high in parts if high is not None]
        if node.op == "and":
            return (max(lowers) if lowers else None), (min(uppers) if uppers else None)
        return (min(lowers) if len(lowers) == len(parts) else None,
                max(uppers) if len(uppers) == len(parts) else None)
    return None, None


def _is_keyset_order(order: list[OrderItem]) -> bool:
    paths = [(item.field.path.lower(), item.descending) for item in order]
    return paths in ([(_STAMP, False)], [(_STAMP, False), ("id", False)])


def _no_such_column(text: str, ref: FieldRef, sobject: str) -> SoqlError:
    leaf = ref.path.split(".")[-1]
    return _malformed(
        text, ref.pos,
        f"No such column '{leaf}' on entity '{sobject}'. If you are attempting to use a custom field, be "
        "sure to append the '__c' after the custom field name. Please reference your WSDL or the describe "
        "call for the appropriate names.", "INVALID_FIELD")


def bind_field(text: str, ref: FieldRef, sobject: str, fields_of: FieldsOf, lookup: Lookup) -> BoundField:
    """Resolve ``Field`` or ``Relationship.Field`` against the sObject's visible fields."""
    parts = ref.path.split(".")
    own = fields_of(sobject)
    if len(parts) == 1:
        fdef = own.get(parts[0].lower())
        if fdef is None:
            raise _no_such_column(text, ref, sobject)
        name = fdef.name
        return BoundField(name, None, fdef, lambda values: values.get(name))
    if len(parts) > 2:
        raise _malformed(text, ref.pos, f"Didn't understand relationship '{'.'.join(parts[:-1])}' in field "
                         f"path. Only one level of parent relationship is supported here.", "INVALID_FIELD")
    rel = next((f for f in own.values() if f.relationship_name and f.relationship_name.lower()
                == parts[0].lower()), None)
    if rel is None:
        raise _malformed(text, ref.pos, f"Didn't understand relationship '{parts[0]}' in field path. If you "
                         "are attempting to use a custom relationship, be sure to append the '__r' after the "
                         "custom relationship name.", "INVALID_FIELD")
    leaf: FieldDef | None = None
    for target in rel.reference_to:
        if target in SOBJECTS:
            leaf = fields_of(target).get(parts[1].lower())
            if leaf is not None:
                break
    if leaf is None:
        target_name = rel.reference_to[0] if len(rel.reference_to) == 1 else "Name"
        raise _malformed(text, ref.pos, f"No such column '{parts[1]}' on entity '{target_name}'. If you are "
                         "attempting to use a custom field, be sure to append the '__c' after the custom "
                         "field name.", "INVALID_FIELD")
    ref_name, leaf_name = rel.name, leaf.name

    def getter(values: Values) -> Any:
        target_id = values.get(ref_name)
        if target_id is None:
            return None
        parent = lookup(target_id)
        return None if parent is None else parent.get(leaf_name)

    assert rel.relationship_name is not None
    return BoundField(leaf_name, rel.relationship_name, leaf, getter, rel.reference_to)


def _check_literal(text: str, bound: BoundField, lit: Literal, ref: FieldRef) -> Any:
    kind = bound.fdef.type
    if lit.kind == "null":
        return None
    ok = ((kind in _STRINGY and lit.kind == "string") or (kind in _NUMERIC and lit.kind == "number")
          or (kind == "boolean" and lit.kind == "boolean") or (kind == "datetime" and lit.kind == "datetime")
          or (kind == "date" and lit.kind == "date"))
    if not ok:
        expected = {"datetime": "dateTime", "date": "date", "boolean": "boolean"}.get(kind, "string")
        if kind in _NUMERIC:
            expected = "double" if kind != "int" else "int"
        quoted = "should be enclosed in quotes" if kind in _STRINGY else "should not be enclosed in quotes"
        raise _malformed(text, lit.pos, f"value of filter criterion for field '{ref.path}' must be of type "
                         f"{expected} and {quoted}", "INVALID_FIELD")
    value = lit.value
    if kind in ("id", "reference") and isinstance(value, str) and len(value) == 15 and value.isalnum():
        from crmsim.salesforce.store import to18  # local import: store imports this module (selection)

        value = to18(value)
    return value


def _fold(kind: str, value: Any) -> Any:
    if value is not None and kind in _STRINGY and kind not in ("id", "reference"):
        return value.casefold()
    return value


def _like_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.IGNORECASE | re.DOTALL)


def _compile_condition(text: str, node: Any, sobject: str, fields_of: FieldsOf,
                       lookup: Lookup) -> Callable[[Values], bool]:
    if isinstance(node, BoolOp):
        parts = [_compile_condition(text, item, sobject, fields_of, lookup) for item in node.items]
        if node.op == "and":
            return lambda values: all(part(values) for part in parts)
        return lambda values: any(part(values) for part in parts)
    if isinstance(node, Not):
        inner = _compile_condition(text, node.item, sobject, fields_of, lookup)
        return lambda values: not inner(values)
    assert isinstance(node, Compare)
    bound = bind_field(text, node.field, sobject, fields_of, lookup)
    kind = bound.fdef.type
    get = bound.getter
    if node.op == "like":
        if kind not in _STRINGY or node.values[0].kind != "string":
            raise _malformed(text, node.values[0].pos, f"invalid operator on field '{node.field.path}': LIKE "
                             "only works on string fields", "INVALID_FIELD")
        regex = _like_regex(node.values[0].value)
        return lambda values: (v := get(values)) is not None and regex.match(v) is not None
    literals = [_fold(kind, _check_literal(text, bound, lit, node.field)) for lit in node.values]
    fget = _folded_getter(get, kind)
    if node.op in ("in", "notin"):
        members = set(literals)
        if node.op == "in":
            return lambda values: fget(values) in members
        return lambda values: fget(values) not in members
    target = literals[0]
    op = node.op
    if op == "=":
        return lambda values: fget(values) == target
    if op == "!=":
        return lambda values: fget(values) != target
    if target is None:
        return lambda values: False
    compare: Callable[[Any, Any], bool] = {"<": operator.lt, "<=": operator.le, ">": operator.gt,
                                           ">=": operator.ge}[op]

    def ordered(values: Values) -> bool:
        value = fget(values)
        return value is not None and compare(value, target)

    return ordered


def _folded_getter(getter: Callable[[Values], Any], kind: str) -> Callable[[Values], Any]:
    """The getter itself, or one that casefolds text so comparisons are case-insensitive."""
    if kind in _STRINGY and kind not in ("id", "reference"):
        def folded(values: Values) -> Any:
            value = getter(values)
            return None if value is None else value.casefold()
        return folded
    return getter


def _order_key(getter: Callable[[Values], Any], kind: str) -> Callable[[Values], Any]:
    return _folded_getter(getter, kind)


def compile_query(text: str, fields_of: FieldsOf, lookup: Lookup) -> CompiledQuery:
    """Parse and bind a query; raises :class:`SoqlError` (MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE)."""
    query = parse(text)
    sobject = next((name for name in SOBJECTS if name.lower() == query.sobject.lower()), None)
    if sobject is None:
        raise _malformed(text, query.sobject_pos,
                         f"sObject type '{query.sobject}' is not supported. If you are attempting to use a "
                         "custom object, be sure to append the '__c' after the entity name. Please reference "
                         "your WSDL or the describe call for the appropriate names.", "INVALID_TYPE")
    select = [bind_field(text, ref, sobject, fields_of, lookup) for ref in query.fields]
    if query.count and query.count != "COUNT()":
        bind_field(text, FieldRef(query.count, 0), sobject, fields_of, lookup)
    if not select and not query.count:
        raise _malformed(text, 0, "unexpected token: FROM")
    predicate: Callable[[Values], bool] = lambda values: True  # noqa: E731
    if query.where is not None:
        predicate = _compile_condition(text, query.where, sobject, fields_of, lookup)
    order: list[tuple[Callable[[Values], Any], bool, bool]] = []
    for item in query.order:
        bound = bind_field(text, item.field, sobject, fields_of, lookup)
        nulls_last = item.nulls_last if item.nulls_last is not None else item.descending
        order.append((_order_key(bound.getter, bound.fdef.type), item.descending, nulls_last))
    if query.offset is not None and query.offset > 2000:
        raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")
    return CompiledQuery(sobject, select, query.count == "COUNT()", bool(query.count and query.count != "COUNT()"),
                         predicate, order, query.limit, query.offset,
                         stamp_range(query.where) if query.where is not None else (None, None),
                         _is_keyset_order(query.order))


def sort_rows(rows: list[Any], order: list[tuple[Callable[[Values], Any], bool, bool]],
              values_of: Callable[[Any], Values]) -> None:
    """Sort in place by several keys, each ASC/DESC with nulls first or last."""
    if not order:
        return
    if len({descending for _, descending, _ in order}) == 1:
        # One direction for all keys: a single sort on a composite key.
        descending = order[0][1]
        parts = [(getter, nulls_last != descending) for getter, _, nulls_last in order]

        def key(row: Any) -> tuple[Any, ...]:
            values = values_of(row)
            out: list[Any] = []
            for getter, null_high in parts:
                value = getter(values)
                # null_high puts nulls after values in the sort's own (possibly reversed) order.
                out.append(((value is None) if null_high else (value is not None), value))
            return tuple(out)

        rows.sort(key=key, reverse=descending)
        return
    for getter, descending, nulls_last in reversed(order):
        def one_key(row: Any, g: Callable[[Values], Any] = getter, last: bool = nulls_last,
                    desc: bool = descending) -> tuple[bool, Any]:
            value = g(values_of(row))
            # The flag orders nulls; with reverse=True the flag's meaning flips.
            is_null = value is None
            return ((is_null if last else not is_null) if not desc else (not is_null if last else is_null),
                    value)
        rows.sort(key=one_key, reverse=descending)
