"""Parse and type-check protocol expressions into the intermediate form (engine/ir/nodes.py).

A real LALR parser (lark) reads the text; a checker resolves names (value sets, definitions,
patient attributes), checks types and units, and converts constants into the unit of the data
they are compared with. Problems come back with the file position of the offending word.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from engine.ir import nodes as ir
from engine.language.errors import Location, suggest
from engine.language.units import (UnitError, converter, is_clinical_conversion, is_known_unit, known_units,
                                   normalise_unit)

_PARSER = Lark(
    (Path(__file__).with_name("grammar.lark")).read_text(),
    parser="lalr",
    propagate_positions=True,
    maybe_placeholders=False,
)

PATIENT_ATTRS = {"age", "sex", "birth_date", "death_date"}
MIXED_UNITS = "(values of value sets in different units)"
EPISODE = "episode"  # the episode a measure counted per episode looks at (measures: episodes:)
CONTEXT_DATES = {"reference_date", "period_start", "period_end"}
AGE_AT = {"age_at_period_start": "age_at_period_start", "age_at_period_end": "age_at_period_end"}
# Fields an event can be filtered on: its own, plus the attributes importers keep (see records/).
EVENT_FIELDS = {"value", "status", "setting", "kind", "source", "value_code", "code", "class", "intent",
                "verification_status", "clinical_status", "category", "discharge_disposition", "do_not_perform",
                "body_site", "reason", "severity", "resource", "result", "start", "end", "unit_system", "profile"}
# Fields that are codings (kept by the importer as lists of {system, code}): matched `in <value set>`.
CODED_FIELDS = {"value_code", "code", "discharge_disposition", "body_site", "reason", "severity"}
NUMBER_FUNCS = {"exp": (1, 1), "ln": (1, 1), "power": (2, 2), "least": (2, 99), "greatest": (2, 99),
                "abs": (1, 1)}
COMP_NORMAL = {"=": "==", "==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
TYPE_WORDS = {
    ir.SET: "a list of events",
    ir.EVENT: "an event",
    ir.NUMBER: "a number",
    ir.DATE: "a date",
    ir.STRING: "text",
    ir.BOOL: "a yes/no condition",
}
_TOKEN_WORDS = {
    "NAME": "a name", "SIGNED_NUMBER": "a number", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "COMP": "a comparison (< <= = != >= >)", "UNIT": "a unit",
    "DUR_UNIT": "days / weeks / months / years",
    "FUNC": "latest / earliest / count / exists / min / max / exp / ln / power / least / greatest / abs",
    "LPAR": "'('", "RPAR": "')'", "AND": "'and'", "OR": "'or'", "DOT": "'.'", "STRING": "quoted text",
}


@dataclass
class ValueSetDecl:
    name: str
    unit: str | None = None
    analyte: str | None = None
    columns: tuple[str, ...] = ()  # property columns of its codelist (for `count(distinct <column> of ...)`)
    any_code: bool = False  # `kind:` alone: every fact of a kind, not a list of codes
    words: str | None = None  # what it is, in words (its cluster's), for why-lines; None: its identifier


class ExprError(Exception):
    def __init__(self, message: str, line: int = 1, column: int = 1, expected: str | None = None,
                 suggestion: str | None = None):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column
        self.expected, self.suggestion = expected, suggestion

    def located(self, base: Location, quoted: bool = False) -> tuple[Location, str, str | None, str | None]:
        """Translate a position inside the expression into a position in the file."""
        if self.line == 1:
            loc = Location(base.file, base.line, base.column + self.column - 1 + (1 if quoted else 0))
        else:
            loc = Location(base.file, base.line + self.line - 1, self.column)
        return loc, self.message, self.expected, self.suggestion


class Scope:
    """What names an expression may use, and their compiled meaning."""

    def __init__(self, valuesets: dict[str, ValueSetDecl], definitions: dict[str, ir.Node] | None = None):
        self.valuesets = valuesets
        self.definitions = definitions if definitions is not None else {}

    def known_names(self) -> list[str]:
        return sorted(set(self.valuesets) | set(self.definitions) | PATIENT_ATTRS | CONTEXT_DATES | set(AGE_AT) | {EPISODE})


def parse(text: str) -> Tree:
    try:
        return _PARSER.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(text, e) from None


def _syntax_error(text: str, e: UnexpectedInput) -> ExprError:
    line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        expected = _expected_words(getattr(e, "expected", None) or getattr(e, "accepts", None) or set())
        last = text.rstrip().split()[-1] if text.strip() else ""
        return ExprError(f"the condition ends too early after {last!r}", 1, len(text.rstrip()) + 1, expected)
    if isinstance(e, UnexpectedToken):
        expected = _expected_words(e.accepts or e.expected)
        word = str(e.token.value).lower()
        if word in ("null", "none", "nil") or (word == "not" and "null" in text[e.token.start_pos:].lower()):
            return ExprError(f"unexpected {e.token.value!r}: there is no null; say whether something is recorded",
                             line, col, "'X exists' / 'X is missing' (an event, or a value such as latest(x).result); "
                             "for events with a field recorded: 'x where result exists', 'x where value exists'")
        return ExprError(f"unexpected {e.token.value!r}", line, col, expected)
    if isinstance(e, UnexpectedCharacters):
        return ExprError(f"unexpected character {text[e.pos_in_stream]!r}", line, col,
                         _expected_words(e.allowed or set()))
    return ExprError(str(e), line, col)


def _expected_words(tokens) -> str | None:
    words = sorted({_TOKEN_WORDS.get(t, t.lower().strip('"')) for t in tokens if not t.startswith("__")})
    if not words:
        return None
    return ", ".join(words[:8]) + (" ..." if len(words) > 8 else "")


def compile_expr(text: str, scope: Scope, want: str | None = None) -> ir.Node:
    """Parse and check one expression. `want` = the type the caller needs (BOOL accepts events/sets)."""
    tree = parse(str(text))
    node = _Checker(scope).check(tree)
    if want == ir.BOOL:
        node = as_bool(node, tree)
    elif want == ir.EVENT and node.type == ir.SET:
        raise ExprError("this is a list of events; pick one with latest(...) or earliest(...)", 1, 1,
                        expected="an event")
    elif want and node.type != want:
        raise ExprError(f"this is {TYPE_WORDS[node.type]}", 1, 1, expected=TYPE_WORDS[want])
    return node


def as_bool(node: ir.Node, tree=None) -> ir.Node:
    """In a yes/no position an event or list of events means 'exists' (documented coercion)."""
    if node.type == ir.BOOL:
        return node
    if node.type in (ir.SET, ir.EVENT):
        return ir.Exists(node)
    line, col = _pos(tree) if tree is not None else (1, 1)
    raise ExprError(f"{TYPE_WORDS[node.type]} cannot be used as a condition", line, col,
                    expected="a yes/no condition, e.g. 'x > 5' or 'latest(x) exists'")


def _pos(t) -> tuple[int, int]:
    if isinstance(t, Token):
        return t.line or 1, t.column or 1
    meta = getattr(t, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        return meta.line, meta.column
    for c in getattr(t, "children", []):
        return _pos(c)
    return 1, 1


class _Checker:
    def __init__(self, scope: Scope):
        self.scope = scope

    def err(self, t, message: str, expected: str | None = None, suggestion: str | None = None) -> ExprError:
        line, col = _pos(t)
        return ExprError(message, line, col, expected, suggestion)

    def check(self, t) -> ir.Node:
        if isinstance(t, Token):
            raise self.err(t, f"unexpected {t.value!r}")
        method = getattr(self, "_" + t.data.rstrip("_"), None)
        if method is None:
            raise self.err(t, f"unsupported construct {t.data}")
        return method(t)

    # --- boolean structure ---
    def _or(self, t):
        return ir.Or(tuple(self.boolean(c) for c in t.children))

    def _and(self, t):
        return ir.And(tuple(self.boolean(c) for c in t.children))

    def _not(self, t):
        return ir.Not(self.boolean(t.children[0]))

    def boolean(self, t) -> ir.Node:
        return as_bool(self.check(t), t)

    def _true(self, t):
        return ir.Const(True, ir.BOOL)

    def _false(self, t):
        return ir.Const(False, ir.BOOL)

    def _exists(self, t):
        node = self.check(t.children[0])
        if node.type in (ir.NUMBER, ir.DATE, ir.STRING) and getattr(ir.unwrap(node), "nullable", False):
            return ir.Present(node)  # `latest(x).result exists`: the value is recorded (= not missing)
        if node.type not in (ir.SET, ir.EVENT):
            raise self.err(t, f"'exists' needs an event, a list of events or a value that may be missing, "
                              f"not {TYPE_WORDS[node.type]}")
        return ir.Exists(node)

    def _missing(self, t):
        node = self.check(t.children[0])
        if node.type in (ir.SET, ir.EVENT):
            return ir.Not(ir.Exists(node))
        if getattr(ir.unwrap(node), "nullable", False) and node.type in (ir.NUMBER, ir.DATE, ir.STRING):
            # missing when the event is absent, or present without this value (e.g. a test with no result)
            return ir.Not(ir.Present(node))
        raise self.err(t, f"'is missing' needs an event or an event's value, not {TYPE_WORDS[node.type]}")

    def _before(self, t):
        return self._order(t, "<")

    def _after(self, t):
        return self._order(t, ">")

    def _order(self, t, op):
        left, right = (self.as_date(c) for c in t.children)
        return ir.Compare(op, left, right)

    def as_date(self, t) -> ir.Node:
        node = self.check(t)
        if node.type == ir.EVENT:
            return ir.Attr(node, "date")
        if node.type == ir.SET:
            raise self.err(t, "'before'/'after' compare single events", expected="latest(...) or earliest(...)")
        if node.type != ir.DATE:
            raise self.err(t, f"'before'/'after' compare dates, not {TYPE_WORDS[node.type]}", expected="an event or a date")
        return node

    def _compare(self, t):
        lt, op_tok, rt = t.children
        op = COMP_NORMAL[op_tok.value]
        left, right = self.scalar(lt), self.scalar(rt)
        if left.type != right.type:
            raise self.err(op_tok, f"cannot compare {TYPE_WORDS[left.type]} with {TYPE_WORDS[right.type]}",
                           expected=f"{TYPE_WORDS[left.type]} on both sides")
        if left.type == ir.STRING and op not in ("==", "!="):
            raise self.err(op_tok, "text can only be compared with = or !=")
        if left.type == ir.BOOL:
            raise self.err(op_tok, "compare yes/no conditions with 'and' / 'or' / 'not', not with =")
        if left.type == ir.NUMBER:
            left, right = self.align_units(left, right, op_tok)
        return ir.Compare(op, left, right)

    def scalar(self, t) -> ir.Node:
        node = self.check(t)
        if node.type == ir.EVENT:  # an event in a comparison means its value
            base = ir.unwrap(node)
            return ir.Attr(node, "value", *self.event_unit(base))
        if node.type == ir.SET:
            raise self.err(t, "a list of events cannot be compared", expected="latest(...), count(...), min(...) or max(...)")
        return node

    def event_unit(self, node) -> tuple[str | None, str | None]:
        """The unit and analyte of the values of an event set (from its value set declaration)."""
        n = ir.unwrap(node)
        while not isinstance(n, (ir.ValueSetRef, ir.EventUnion)):
            n = ir.unwrap(n.source)
        if isinstance(n, ir.EventUnion):
            units = [self.event_unit(i) for i in n.items]
            if len({normalise_unit(u) for u, _ in units}) > 1:
                return MIXED_UNITS, None
            analytes = {a for _, a in units}
            return units[0][0], (analytes.pop() if len(analytes) == 1 else None)
        return n.unit, n.analyte

    def align_units(self, left, right, tok):
        lu, ru = getattr(left, "unit", None), getattr(right, "unit", None)
        if isinstance(ir.unwrap(right), ir.Const) and not isinstance(ir.unwrap(left), ir.Const):
            var, const, flip = left, ir.unwrap(right), False
        elif isinstance(ir.unwrap(left), ir.Const) and not isinstance(ir.unwrap(right), ir.Const):
            var, const, flip = right, ir.unwrap(left), True
        else:
            if MIXED_UNITS in (lu, ru):
                raise self.err(tok, "a union of value sets in different units has no one unit to compare in",
                               expected="a union of value sets declared with one unit")
            if normalise_unit(lu) != normalise_unit(ru) and lu and ru:
                raise self.err(tok, f"cannot compare {lu} with {ru}", expected="values in the same unit")
            return left, right
        vu = getattr(var, "unit", None)
        if vu == MIXED_UNITS:
            raise self.err(tok, f"{ir.describe(var)} joins value sets whose values are in different units, so its "
                                f"values cannot be compared", expected="a union of value sets declared with one unit")
        if const.unit is None:
            if vu not in (None, "a", "1"):
                raise self.err(tok, f"the number needs a unit: the value is in {vu}", expected=f"e.g. {const.value:g} {vu}")
            return left, right
        if vu is None:
            raise self.err(tok, f"{ir.describe(var)} has no unit declared, so it cannot be compared with {const.unit}",
                           expected="a plain number, or declare the value set's unit")
        try:
            conv = converter(const.unit, vu, getattr(var, "analyte", None))
        except UnitError as e:
            raise self.err(tok, str(e), expected=f"a value in {vu}") from None
        converted = ir.Const(round(conv(float(const.value)), 6), ir.NUMBER, vu)
        return (converted, var) if flip else (var, converted)

    # --- atoms ---
    def _quantity(self, t):
        num = t.children[0]
        value = float(num.value)
        unit = None
        if len(t.children) > 1:
            raw = t.children[1].value
            unit = normalise_unit(raw)
            if not is_known_unit(unit):
                raise self.err(t.children[1], f"unknown unit {raw!r}", expected="a UCUM unit",
                               suggestion=suggest(raw, known_units()))
        return ir.Const(value, ir.NUMBER, unit)

    def _string(self, t):
        return ir.Const(t.children[0].value[1:-1], ir.STRING)

    def _date_lit(self, t):
        tok = t.children[0]
        try:
            return ir.Const(dt.date.fromisoformat(tok.value), ir.DATE)
        except ValueError:
            raise self.err(tok, f"{tok.value!r} is not a real date", expected="YYYY-MM-DD") from None

    def _name(self, t):
        tok = t.children[0]
        name = tok.value
        if name not in self.scope.definitions and name not in self.scope.valuesets and self._shared(name):
            raise self.err(tok, f"{name!r} is a shared definitions file this protocol uses; name one of its "
                                f"definitions or value sets", expected=", ".join(self._shared(name)[:6]))
        return self._resolve(name, tok)

    def _shared(self, prefix: str) -> list[str]:
        """The names a shared definitions file brings in (`uses: [efi@1.0.0]`: efi.score, efi.severe ...)."""
        p = prefix + "."
        return sorted(n for n in (*self.scope.definitions, *self.scope.valuesets) if n.startswith(p))

    def _shared_name(self, base_t, name_tok):
        """`efi.severe` parses as an attribute of `efi`: a name from the shared definitions file `efi`
        (engine/language/shared.py); also after `where <field> in`. None when it is not one."""
        if not isinstance(base_t, Tree):
            return None
        if base_t.data == "name":
            prefix = base_t.children[0].value
            if prefix in self.scope.definitions or prefix in self.scope.valuesets or not self._shared(prefix):
                return None
            full = f"{prefix}.{name_tok.value}"
            if full not in self._shared(prefix):
                raise self.err(name_tok, f"the shared definitions {prefix!r} have no {name_tok.value!r}",
                               expected=", ".join(self._shared(prefix)[:8]), suggestion=suggest(full, self._shared(prefix)))
            return self._resolve(full, name_tok)
        if base_t.data in ("where_in_valueset", "where_not_in_valueset"):
            prefix = base_t.children[2].value
            if prefix in self.scope.valuesets or not self._shared(prefix):
                return None
            return self._where_in_valueset(base_t, base_t.data == "where_not_in_valueset",
                                           (f"{prefix}.{name_tok.value}", name_tok))
        return None

    def _resolve(self, name: str, tok):
        if name in self.scope.definitions:
            node = self.scope.definitions[name]  # compiled first: its `label:` is known after
            return ir.Named(name, node, getattr(self.scope, "labels", {}).get(name))
        if name in self.scope.valuesets:
            d = self.scope.valuesets[name]
            return ir.ValueSetRef(name, d.unit, d.analyte, getattr(d, "words", None))
        if name in PATIENT_ATTRS or name in AGE_AT:
            return ir.Patient(name)
        if name in CONTEXT_DATES:
            return ir.ContextDate(name)
        if name == EPISODE:
            return ir.EpisodeRef()
        raise self.err(tok, f"unknown name {name!r}", expected="a value set, a definition or age / sex",
                       suggestion=suggest(name, self.scope.known_names()))

    def _call(self, t):
        fn, arg = t.children
        if fn.value in NUMBER_FUNCS:
            return self._number_func(t, fn, [arg])
        node = self.check(arg)
        if node.type not in (ir.SET, ir.EVENT):
            raise self.err(arg, f"{fn.value}(...) needs a value set or list of events, not {TYPE_WORDS[node.type]}")
        f = fn.value
        if f in ("latest", "earliest"):
            return ir.Pick(node, f)
        if f in ("min", "max"):
            return ir.Pick(node, f)
        if f == "count":
            return ir.Count(node)
        if f == "exists":
            return ir.Exists(node)
        if f == "sum":
            raise self.err(fn, "sum(...) adds up the values or the days of a list of events",
                           expected="sum(value of ...) or sum(days of ...)")
        raise self.err(fn, f"unknown function {f}")

    def _call_many(self, t):
        fn, *args = t.children
        if fn.value not in NUMBER_FUNCS:
            raise self.err(fn, f"{fn.value}(...) takes one list of events",
                           expected="least(a, b, ...) / greatest(a, b, ...) / power(x, y) for numbers")
        return self._number_func(t, fn, args)

    def _number_func(self, t, fn, arg_ts):
        """exp(x), ln(x), power(x, y), least(a, b, ...), greatest(a, b, ...), abs(x)."""
        name = fn.value
        lo, hi = NUMBER_FUNCS[name]
        if not lo <= len(arg_ts) <= hi:
            raise self.err(fn, f"{name}(...) takes {lo if lo == hi else f'{lo} to {hi}'} number(s), got {len(arg_ts)}")
        args = [self.scalar(a) for a in arg_ts]
        for a, at in zip(args, arg_ts):
            if a.type != ir.NUMBER:
                raise self.err(at, f"{name}(...) works on numbers, not {TYPE_WORDS[a.type]}",
                               expected="a number, e.g. latest(x).value, count(...), age")
        unit = None
        if name in ("least", "greatest"):
            base = next((a for a in args if not isinstance(ir.unwrap(a), ir.Const)), args[0])
            aligned = [self.align_units(base, a, fn)[1] if a is not base else a for a in args]
            units = {normalise_unit(getattr(a, "unit", None)) for a in aligned} - {None, "1"}
            if len(units) > 1:
                raise self.err(fn, f"{name}(...) of values in different units ({', '.join(sorted(units))})",
                               expected="values in one unit")
            args, unit = aligned, (units.pop() if units else None)
        elif name == "abs":
            unit = normalise_unit(getattr(args[0], "unit", None))
        else:
            for a, at in zip(args, arg_ts):
                u = normalise_unit(getattr(a, "unit", None))
                if u not in (None, "1", "a"):
                    raise self.err(at, f"{name}(...) needs a plain number, not a value in {u}",
                                   expected="divide by a value in the same unit first, e.g. x / (1 mmol/L)")
        return ir.Func(name, tuple(args), unit)

    def _call_of(self, t):
        """`sum(value of x)`, `sum(days of x)`: a total over a list of events (SumOf)."""
        fn, key_tok, arg = t.children
        key = key_tok.value
        if fn.value != "sum":
            raise self.err(fn, f"'{key} of' goes with sum(...), not {fn.value}(...)",
                           expected="sum(value of ...), sum(days of ...) or count(distinct <column> of ...)")
        if key not in ("value", "days"):
            raise self.err(key_tok, f"sum(...) adds up values or days, not {key!r}", expected="value, days",
                           suggestion=suggest(key, ("value", "days")))
        node = self.check(arg)
        if node.type not in (ir.SET, ir.EVENT):
            raise self.err(arg, f"sum({key} of ...) needs a value set or list of events, not {TYPE_WORDS[node.type]}")
        return ir.SumOf(node, key, getattr(node, "unit", None) if key == "value" else None)

    def _call_distinct(self, t):
        fn, key_tok, arg = t.children
        if fn.value != "count":
            raise self.err(fn, f"'distinct' goes with count(...), not {fn.value}(...)",
                           expected="count(distinct code of ...) or count(distinct <column> of ...)")
        node = self.check(arg)
        if node.type not in (ir.SET, ir.EVENT):
            raise self.err(arg, f"count(distinct ...) needs a value set or list of events, not {TYPE_WORDS[node.type]}")
        names = ir.base_valuesets(node)
        columns = set.intersection(*(set(self.scope.valuesets[v].columns) for v in names)) if names else set()
        allowed = {"code"} | columns
        key = key_tok.value
        if key not in allowed:
            where = ", ".join(sorted(allowed))
            raise self.err(key_tok, f"{', '.join(names)} has no column {key!r} to count distinct values of",
                           expected=where, suggestion=suggest(key, allowed))
        return ir.CountDistinct(node, key)

    # --- arithmetic on numbers ---
    def _add(self, t):
        return self._arith(t, "+")

    def _sub(self, t):
        return self._arith(t, "-")

    def _mul(self, t):
        return self._arith(t, "*")

    def _div(self, t):
        return self._arith(t, "/")

    def _arith(self, t, op: str):
        lt, rt = t.children
        left, right = self.scalar(lt), self.scalar(rt)
        for side, st in ((left, lt), (right, rt)):
            if side.type != ir.NUMBER:
                hint = " (to move a date, add or subtract a duration such as 3 months)" if side.type == ir.DATE else ""
                raise self.err(st, f"'{op}' works on numbers, not {TYPE_WORDS[side.type]}{hint}",
                               expected="a number, e.g. count(...), latest(x).value, age")
        if op in "+-":
            const = next((ir.unwrap(x) for x in (left, right) if isinstance(ir.unwrap(x), ir.Const)), None)
            var = next((x for x in (left, right) if not isinstance(ir.unwrap(x), ir.Const)), None)
            if const is not None and var is not None and is_clinical_conversion(
                    const.unit, getattr(var, "unit", None), getattr(var, "analyte", None)):
                raise self.err(t, f"a difference in {const.unit} cannot be converted into {getattr(var, 'unit', None)} "
                                  f"(the conversion is an equation, not a scale)",
                               expected=f"the number in {getattr(var, 'unit', None)}")
            left, right = self.align_units(left, right, t)
            units = {normalise_unit(getattr(x, "unit", None)) for x in (left, right)} - {None, "1"}
            return ir.Arith(op, left, right, units.pop() if len(units) == 1 else None)
        lu, ru = (normalise_unit(getattr(x, "unit", None)) for x in (left, right))
        real = lambda u: u not in (None, "1")  # noqa: E731
        if real(lu) and real(ru):
            if op == "/" and lu == ru:
                return ir.Arith(op, left, right, None)
            raise self.err(t, f"cannot {'multiply' if op == '*' else 'divide'} a value in {lu} by one in {ru}",
                           expected="one side a plain number")
        if op == "/" and real(ru):
            raise self.err(rt, f"cannot divide by a value in {ru}", expected="a plain number to divide by")
        return ir.Arith(op, left, right, lu if real(lu) else ru if real(ru) else None)

    def _attr(self, t):
        base_t, name_tok = t.children
        shared = self._shared_name(base_t, name_tok)
        if shared is not None:
            return shared
        base = self.check(base_t)
        name = name_tok.value
        if base.type != ir.EVENT:
            raise self.err(name_tok, f"'.{name}' needs a single event, not {TYPE_WORDS[base.type]}",
                           expected="latest(...) / earliest(...) / min(...) / max(...)")
        if name not in ("value", "date", "end", "result"):
            raise self.err(name_tok, f"events have no {name!r}", expected="value, date, end or result",
                           suggestion=suggest(name, ["value", "date", "end", "result"]))
        if name == "value":
            return ir.Attr(base, "value", *self.event_unit(base))
        return ir.Attr(base, name)

    def duration(self, t) -> ir.Duration:
        num, unit = t.children
        amount = float(num.value)
        if amount != int(amount) or amount < 0:
            raise self.err(num, "durations are whole, non-negative numbers")
        u = unit.value if unit.value.endswith("s") else unit.value + "s"
        return ir.Duration(int(amount), u)

    def source(self, t):
        node = self.check(t)
        if node.type not in (ir.SET, ir.EVENT):
            raise self.err(t, f"a time window applies to events, not {TYPE_WORDS[node.type]}")
        return node

    def _within_ago(self, t):
        return ir.Window(self.source(t.children[0]), "ago", self.duration(t.children[1]))

    def _within_after(self, t):
        return ir.Window(self.source(t.children[0]), "after", self.duration(t.children[1]), self.anchor(t.children[2]))

    def _within_before(self, t):
        return ir.Window(self.source(t.children[0]), "before", self.duration(t.children[1]), self.anchor(t.children[2]))

    def _within_after_end(self, t):
        """`x within 30 days after end of admissions`: events starting after the end of any of the anchor events
        (to the minute, so an admission never counts as its own readmission), up to 30 days after its end date."""
        src = self.source(t.children[0])
        anchor = self.check(t.children[2])
        if anchor.type not in (ir.SET, ir.EVENT):
            raise self.err(t.children[2], f"'after end of' needs events with an end (e.g. admissions), "
                           f"not {TYPE_WORDS[anchor.type]}", expected="a value set, a list of events or one event")
        return ir.Window(src, "after_end", self.duration(t.children[1]), anchor)

    def anchor(self, t) -> ir.Node:
        """What `within N after / before X` counts from: a date, one event (its date) or a list of events
        (any of their dates: e.g. an assessment up to 7 days before any qualifying visit)."""
        node = self.check(t)
        if node.type == ir.SET:
            return node
        return self.as_date(t)

    # --- timing relations, intervals, date arithmetic, union ---
    TIMING = {"starts_during": "starts", "ends_during": "ends", "entirely_during": "entirely", "overlaps": "overlaps"}

    def _timing(self, t, negate: bool = False):
        src_t, rel_t, iv_t = t.children
        src = self.source(src_t)
        relation = self.TIMING[rel_t.data]
        span = self.span(iv_t)
        if span.kind == "period" and not negate and relation in ("starts", "overlaps"):
            # the original forms `during period` / `overlaps period` keep their original nodes
            return ir.Window(src, "period" if relation == "starts" else "overlaps")
        return ir.Timing(src, relation, span, negate)

    def _timing_not(self, t):
        return self._timing(t, negate=True)

    def _on_or_before(self, t, after: bool = False):
        """`X ends on or before D` / `X starts on or after D`: a range open at one end (whole days)."""
        src_t, point_t, bound_t = t.children
        src = self.source(src_t)
        node = self.check(bound_t)
        if node.type in (ir.SET, ir.EVENT):
            # against events: up to each one's end (on or before) / from each one's start (on or after)
            span = ir.Span("events", events=node, open_start=not after, open_end=after)
        else:
            bound = self.range_end(bound_t)
            span = ir.Span("range", start=bound, end=None) if after else ir.Span("range", start=None, end=bound)
        return ir.Timing(src, self.TIMING[point_t.data], span)

    def _on_or_after(self, t):
        return self._on_or_before(t, after=True)

    def _where_exists(self, t, negate: bool = False):
        """`x where result exists`: keep events with the field recorded (`result`: a result of any kind,
        number, coded value, text or yes/no; `value`: a number); `where F is missing` keeps the others."""
        src = self.source(t.children[0])
        fld = self._field(t.children[1])
        return ir.Where(src, fld, "exists", None, negate)

    def _where_start_end(self, fld: str, t):
        raise self.err(t, f"'{fld}' can only be tested with 'where {fld} exists' / 'where {fld} is missing'",
                       expected=f"e.g. x where {fld} exists; compare times with during / on or before / on or after")

    def _where_missing(self, t):
        return self._where_exists(t, negate=True)

    def span(self, t) -> ir.Span:
        if t.data == "iv_period":
            return ir.Span("period")
        if t.data == "iv_range":
            start, end = (self.range_end(c) for c in t.children)
            return ir.Span("range", start=start, end=end)
        if t.data == "iv_until":  # [, end]: on or before end
            return ir.Span("range", start=None, end=self.range_end(t.children[0]))
        if t.data == "iv_from":  # [start, ]: on or after start
            return ir.Span("range", start=self.range_end(t.children[0]), end=None)
        events = self.check(t.children[0])
        if events.type not in (ir.SET, ir.EVENT):
            raise self.err(t, f"an interval is 'period', [start, end] or a list of events, not {TYPE_WORDS[events.type]}",
                           expected="period, [date, date] or a value set / definition of events")
        return ir.Span("events", events=events)

    def range_end(self, t) -> ir.Node:
        node = self.check(t)
        if node.type == ir.EVENT:
            return ir.Attr(node, "date")
        if node.type != ir.DATE:
            raise self.err(t, f"the ends of a [start, end] range are dates, not {TYPE_WORDS[node.type]}",
                           expected="a date, e.g. period_start - 1 year")
        return node

    def _date_add(self, t):
        return self._shift(t, +1)

    def _date_sub(self, t):
        return self._shift(t, -1)

    def _shift(self, t, sign: int):
        base_t, dur_t = t.children
        base = self.check(base_t)
        if base.type == ir.EVENT:
            base = ir.Attr(base, "date")
        if base.type != ir.DATE:
            raise self.err(base_t, f"only dates can be moved by a duration, not {TYPE_WORDS[base.type]}",
                           expected="a date, e.g. period_start, latest(x).date")
        return ir.DateShift(base, self.duration(dur_t), sign)

    def _union(self, t):
        items = []
        for c in t.children:
            node = self.check(c)
            if node.type not in (ir.SET, ir.EVENT):
                raise self.err(c, f"'union' joins lists of events, not {TYPE_WORDS[node.type]}")
            inner = ir.unwrap(node)
            items.extend(inner.items if isinstance(inner, ir.EventUnion) else [node])
        # value sets in different units may be joined (e.g. results and diagnoses); their values then
        # have no one unit, and comparing them is an error (event_unit gives MIXED_UNITS)
        return ir.EventUnion(tuple(items))

    def _field(self, t):
        tok = t.children[0]
        if tok.value not in EVENT_FIELDS:
            raise self.err(tok, f"events have no field {tok.value!r}", expected=", ".join(sorted(EVENT_FIELDS)),
                           suggestion=suggest(tok.value, EVENT_FIELDS))
        return tok.value

    def _where_compare(self, t, negate: bool = False):
        src_t, field_t, op_tok, lit_t = t.children
        src = self.source(src_t)
        fld = self._field(field_t)
        op = COMP_NORMAL[op_tok.value]
        lit = self.check(lit_t)
        if fld == "value":
            if lit.type != ir.NUMBER:
                raise self.err(lit_t, "an event's value is a number", expected="a number with its unit")
            unit, analyte = self.event_unit(src)
            var = ir.Attr(ir.Pick(src, "latest"), "value", unit, analyte)
            _, lit = self.align_units(var, lit, op_tok)
            return ir.Where(src, "value", op, lit.value, negate)
        if fld in ("start", "end"):
            self._where_start_end(fld, field_t)
        if fld == "result":
            raise self.err(field_t, "'result' is a result of any kind: test it with 'where result exists' / "
                                    "'where result is missing'", expected="where value > ..., where value_code in ...")
        if lit.type == ir.NUMBER:
            raise self.err(lit_t, f"{fld} is text; put the value in quotes")
        return ir.Where(src, fld, op, self.field_literal(lit, lit_t, op), negate)

    def _where_not_compare(self, t):
        return self._where_compare(t, negate=True)

    def field_literal(self, lit: ir.Node, t, op: str = "=="):
        """Field values are compared as text; yes/no flags (do_not_perform) as 'true' / 'false'."""
        if lit.type == ir.BOOL:
            if op not in ("==", "!="):
                raise self.err(t, "true / false can only be compared with = or !=")
            return "true" if lit.value else "false"
        return lit.value

    def _where_in_list(self, t, negate: bool = False):
        src = self.source(t.children[0])
        fld = self._field(t.children[1])
        values = tuple(self.field_literal(self.check(c), c) for c in t.children[2:])
        return ir.Where(src, fld, "in", values, negate)

    def _where_not_in_list(self, t):
        return self._where_in_list(t, negate=True)

    def _where_in_valueset(self, t, negate: bool = False, qualified: tuple | None = None):
        src = self.source(t.children[0])
        fld = self._field(t.children[1])
        vs_name, vs_tok = qualified or (t.children[2].value, t.children[2])  # qualified: efi.vaccine_product
        if vs_name not in self.scope.valuesets:
            raise self.err(vs_tok, f"unknown value set {vs_name!r}", expected="a value set declared under valuesets",
                           suggestion=suggest(vs_name, self.scope.valuesets))
        if self.scope.valuesets[vs_name].any_code:
            raise self.err(vs_tok, f"{vs_name!r} is every fact of a kind, not a list of codes to match a field with",
                           expected="a value set with a codelist, fhir or codes")
        return ir.Where(src, fld, "in-valueset", vs_name, negate, getattr(self.scope.valuesets[vs_name], "words", None))

    def _where_not_in_valueset(self, t):
        return self._where_in_valueset(t, negate=True)
