"""Gate expressions: a small grammar, parsed into an AST and evaluated column-wise with pyarrow.

Nothing here calls ``eval``: text becomes tokens, tokens become nodes, nodes become
``pyarrow.compute`` calls. Grammar (lowest precedence first; keywords are case-insensitive)::

    expr      := and_expr ("or" and_expr)*
    and_expr  := not_expr ("and" not_expr)*
    not_expr  := "not" not_expr | "(" expr ")" | predicate
    predicate := operand CMP operand                      CMP: < <= > >= == !=
               | operand "is" ["not"] "null"
               | operand ["not"] "in" "(" literal ("," literal)* ")"
               | COLUMN                                   a true/false column on its own
    operand   := term (("+" | "-") term)*                arithmetic on numbers only
    term      := factor (("*" | "/") factor)*
    factor    := ("-" | "+") factor | "(" operand ")" | COLUMN | literal
    literal   := ["-"] NUMBER | 'string' | "string" | true | false

Nulls follow SQL's three-valued logic: a comparison with a missing value is unknown, ``and``/``or``
are Kleene, ``not unknown`` is unknown. Callers decide what unknown means (gates: not satisfied).
Arithmetic with a missing value is missing too (``noise * 2`` is null where ``noise`` is), so a
comparison of it is unknown; a division by zero gives inf or nan, as IEEE floats do (arithmetic is
done in float64). A "(" opens an arithmetic group when what follows parses as one and is compared,
else a group of conditions.
One exception, so that ``error_code not in ('TRUNCATED')`` holds for images without an error: a
missing value is simply not in an ``in`` list.

A bare column (``is_duplicate``, ``not size_outlier``) must hold true/false values and means
``column == true``: a null there is unknown too, so ``not is_duplicate`` is unknown for an image
the duplicates pass could not hash.

One module (about 470 lines) on purpose: the tokenizer, the recursive-descent parser and the pyarrow
evaluator share one node type per grammar rule; split apart, none of them reads without the others.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

ValueKind = str  # "number" | "string" | "bool"
CMP_OPS = ("<=", ">=", "==", "!=", "<", ">")
_PC_CMP = {"<": pc.less, "<=": pc.less_equal, ">": pc.greater, ">=": pc.greater_equal, "==": pc.equal,
           "!=": pc.not_equal}
_KEYWORDS = {"and", "or", "not", "is", "null", "in", "true", "false"}
_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<str>'[^'\\]*'|"[^"\\]*")
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|==|!=|<|>)
      | (?P<arith>[-+*/])
      | (?P<punct>[(),])""",
    re.VERBOSE,
)
_OPERATOR_RUN = re.compile(r"[=!<>~&|^%*/+\-\[\]{}.:;@$`?]+")


class ExprError(ValueError):
    """A gate expression is invalid; ``pos`` is the 0-based character offset of the problem."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


@dataclass(frozen=True)
class Token:
    kind: str  # num | str | ident | kw | op | punct | end
    text: str
    pos: int


@dataclass(frozen=True)
class Column:
    name: str
    pos: int

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Literal:
    value: float | str | bool
    pos: int

    @property
    def kind(self) -> ValueKind:
        return "bool" if isinstance(self.value, bool) else "string" if isinstance(self.value, str) else "number"

    def __str__(self) -> str:
        if isinstance(self.value, bool):
            return str(self.value).lower()
        return repr(self.value) if isinstance(self.value, str) else f"{self.value:g}"


@dataclass(frozen=True)
class Arith:
    """``left op right`` on numbers, op one of + - * /; null in, null out."""

    left: Operand
    op: str
    right: Operand
    pos: int

    def __str__(self) -> str:
        return f"({self.left} {self.op} {self.right})"


Operand = Column | Literal | Arith
_PC_ARITH = {"+": pc.add, "-": pc.subtract, "*": pc.multiply, "/": pc.divide}


@dataclass(frozen=True)
class Compare:
    left: Operand
    op: str
    right: Operand

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True)
class IsNull:
    operand: Operand
    negated: bool

    def __str__(self) -> str:
        return f"{self.operand} is {'not ' if self.negated else ''}null"


@dataclass(frozen=True)
class InSet:
    operand: Operand
    values: tuple[Literal, ...]
    negated: bool

    def __str__(self) -> str:
        return f"{self.operand} {'not ' if self.negated else ''}in ({', '.join(str(v) for v in self.values)})"


@dataclass(frozen=True)
class Truthy:
    """A true/false column used as a condition on its own."""

    column: Column

    def __str__(self) -> str:
        return self.column.name


@dataclass(frozen=True)
class Not:
    item: Node

    def __str__(self) -> str:
        return f"not ({self.item})"


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    items: tuple[Node, ...]

    def __str__(self) -> str:
        return f" {self.op} ".join(f"({i})" if isinstance(i, BoolOp) else str(i) for i in self.items)


Node = Compare | IsNull | InSet | Truthy | Not | BoolOp


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            run = _OPERATOR_RUN.match(text, pos)
            if run is not None:
                hint = " (use == to compare)" if run.group() == "=" else ""
                raise ExprError(f"unknown operator {run.group()!r}{hint}; expected one of {', '.join(CMP_OPS)}, "
                                "and, or, not, is null, in", pos)
            raise ExprError(f"unexpected character {text[pos]!r}", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            word = m.group()
            if kind == "ident" and word.lower() in _KEYWORDS:
                kind, word = "kw", word.lower()
            tokens.append(Token(kind, word, pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        t = self.tok
        if t.kind == kind and (text is None or t.text == text):
            return self.take()
        return None

    def expect(self, kind: str, text: str, what: str) -> Token:
        t = self.accept(kind, text)
        if t is None:
            raise ExprError(f"expected {what}, got {self._describe(self.tok)}", self.tok.pos)
        return t

    @staticmethod
    def _describe(t: Token) -> str:
        return "the end of the expression" if t.kind == "end" else repr(t.text)

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise ExprError("empty expression; expected a condition such as 'sharpness >= 120'", 0)
        node = self.or_expr()
        if self.tok.kind != "end":
            raise ExprError(f"unexpected {self._describe(self.tok)}; expected and, or or the end", self.tok.pos)
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.accept("kw", "or"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.accept("kw", "and"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_expr(self) -> Node:
        if self.accept("kw", "not"):
            return Not(self.not_expr())
        if self.tok.kind == "punct" and self.tok.text == "(":
            start = self.i
            try:  # an arithmetic group, e.g. (sharpness - 120) / 40 >= 1
                return self.predicate()
            except ExprError as exc:
                first, self.i = exc, start
            self.take()
            try:  # else a group of conditions
                node = self.or_expr()
                self.expect("punct", ")", "')'")
            except ExprError as exc:
                raise exc if exc.pos >= first.pos else first from None
            return node
        return self.predicate()

    def operand(self) -> Operand:
        return self._chain(self.term, "+-")

    def term(self) -> Operand:
        return self._chain(self.factor, "*/")

    def _chain(self, part: Callable[[], Operand], ops: str) -> Operand:
        """``part (op part)*``, left-associative, for one precedence level of arithmetic."""
        node = part()
        while self.tok.kind == "arith" and self.tok.text in ops:
            t = self.take()
            node = Arith(node, t.text, part(), t.pos)
        return node

    def factor(self) -> Operand:
        t = self.tok
        if t.kind == "arith" and t.text in "+-":
            self.take()
            inner = self.factor()
            if isinstance(inner, Literal) and inner.kind == "number":
                return Literal(-inner.value if t.text == "-" else inner.value, t.pos)  # type: ignore[operator]
            return Arith(Literal(0.0, t.pos), "-", inner, t.pos) if t.text == "-" else inner
        if t.kind == "punct" and t.text == "(":
            self.take()
            node = self.operand()
            self.expect("punct", ")", "')'")
            return node
        return self.atom()

    def atom(self) -> Column | Literal:
        t = self.take()
        if t.kind == "ident":
            return Column(t.text, t.pos)
        if t.kind == "num":
            return Literal(float(t.text), t.pos)
        if t.kind == "str":
            return Literal(t.text[1:-1], t.pos)
        if t.kind == "kw" and t.text in ("true", "false"):
            return Literal(t.text == "true", t.pos)
        raise ExprError(f"expected a column name or a value, got {self._describe(t)}", t.pos)

    def literal(self) -> Literal:
        start = self.tok
        node = self.factor()
        if isinstance(node, Column):
            raise ExprError(f"expected a value in the in-list, got column {node.name!r}", start.pos)
        if not isinstance(node, Literal):
            raise ExprError("expected a value in the in-list, got arithmetic", start.pos)
        return node

    def predicate(self) -> Node:
        left = self.operand()
        t = self.tok
        if t.kind == "op":
            self.take()
            return Compare(left, t.text, self.operand())
        if self.accept("kw", "is"):
            negated = self.accept("kw", "not") is not None
            self.expect("kw", "null", "'null' after 'is'")
            return IsNull(left, negated)
        negated = False
        if t.kind == "kw" and t.text == "not":
            self.take()
            negated = True
            if self.tok.kind != "kw" or self.tok.text != "in":
                raise ExprError(f"expected 'in' after 'not', got {self._describe(self.tok)}", self.tok.pos)
        if self.accept("kw", "in"):
            self.expect("punct", "(", "'(' to start the in-list")
            values = [self.literal()]
            while self.accept("punct", ","):
                values.append(self.literal())
            self.expect("punct", ")", "')' to close the in-list")
            return InSet(left, tuple(values), negated)
        if isinstance(left, Arith):
            raise ExprError(f"expected a comparison ({', '.join(CMP_OPS)}) after the arithmetic, got "
                            f"{self._describe(t)}", t.pos)
        if isinstance(left, Column) and (t.kind == "end" or (t.kind == "kw" and t.text in ("and", "or"))
                                         or (t.kind == "punct" and t.text == ")")):
            return Truthy(left)
        after = f" after {left.name!r}" if isinstance(left, Column) else ""
        raise ExprError(f"expected a comparison ({', '.join(CMP_OPS)}), 'is null' or 'in'{after}, got "
                        f"{self._describe(t)}", t.pos)


def parse(text: str) -> Node:
    """Parse ``text`` into an AST; raises ExprError (with the offending offset) on any problem."""
    return _Parser(text).parse()


def columns(node: Node) -> list[str]:
    """Column names used by ``node``, in order of first use."""
    out: list[str] = []

    def visit(n: Node | Operand) -> None:
        if isinstance(n, Column):
            if n.name not in out:
                out.append(n.name)
        elif isinstance(n, Compare | Arith):
            visit(n.left)
            visit(n.right)
        elif isinstance(n, IsNull | InSet):
            visit(n.operand)
        elif isinstance(n, Truthy):
            visit(n.column)
        elif isinstance(n, Not):
            visit(n.item)
        elif isinstance(n, BoolOp):
            for i in n.items:
                visit(i)

    visit(node)
    return out


def value_kind(dtype: pa.DataType) -> ValueKind:
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "number"
    return "string"


def check(node: Node, kinds: Mapping[str, ValueKind]) -> None:
    """Check columns exist and operand types agree; raises ExprError at the first problem."""

    def kind_of(o: Operand) -> ValueKind:
        if isinstance(o, Literal):
            return o.kind
        if isinstance(o, Arith):
            for side in (o.left, o.right):
                k = kind_of(side)
                if k != "number":
                    raise ExprError(f"{o}: arithmetic needs numbers, but {side} is a {k}", o.pos)
            return "number"
        if o.name not in kinds:
            close = difflib.get_close_matches(o.name, list(kinds), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
                f"known columns: {', '.join(sorted(kinds))}"
            raise ExprError(f"unknown column {o.name!r}; {hint}", o.pos)
        return kinds[o.name]

    def visit(n: Node) -> None:
        if isinstance(n, Compare):
            lk, rk = kind_of(n.left), kind_of(n.right)
            if not columns(Compare(n.left, "==", n.right)):
                raise ExprError(f"{n} compares two constants; put a column on one side", n.left.pos)
            if lk != rk:
                raise ExprError(f"{n} compares a {lk} with a {rk}", n.left.pos)
            if lk == "bool" and n.op not in ("==", "!="):
                raise ExprError(f"{n}: true/false values only support == and !=", n.left.pos)
        elif isinstance(n, IsNull):
            kind_of(n.operand)
        elif isinstance(n, Truthy):
            k = kind_of(n.column)
            if k != "bool":
                example = f"{n.column} >= 0.5" if k == "number" else f"{n.column} == 'value'"
                raise ExprError(f"{n.column.name!r} holds {k} values; only a true/false column can stand on its own "
                                f"(compare it instead, e.g. {example})", n.column.pos)
        elif isinstance(n, InSet):
            k = kind_of(n.operand)
            for v in n.values:
                if v.kind != k:
                    raise ExprError(f"{n}: value {v} is a {v.kind} but {n.operand} holds {k} values", v.pos)
        elif isinstance(n, Not):
            visit(n.item)
        elif isinstance(n, BoolOp):
            for i in n.items:
                visit(i)

    visit(node)


def _operand(o: Operand, table: pa.Table) -> pa.ChunkedArray | pa.Scalar:
    if isinstance(o, Arith):  # in float64: no integer overflow or division error; null in, null out
        left, right = (pc.cast(_operand(side, table), pa.float64()) for side in (o.left, o.right))
        return _PC_ARITH[o.op](left, right)
    return table[o.name] if isinstance(o, Column) else pa.scalar(o.value)


def evaluate(node: Node, table: pa.Table) -> pa.ChunkedArray:
    """Boolean column (with nulls for unknown) of ``node`` over every row of ``table``."""
    if isinstance(node, Compare):
        out = _PC_CMP[node.op](_operand(node.left, table), _operand(node.right, table))
    elif isinstance(node, IsNull):
        out = pc.is_null(_operand(node.operand, table))
        out = pc.invert(out) if node.negated else out
    elif isinstance(node, InSet):
        values = _operand(node.operand, table)
        member = pc.is_in(values, value_set=pa.array([v.value for v in node.values]))  # null: not in the list
        out = pc.invert(member) if node.negated else member
    elif isinstance(node, Truthy):
        out = pc.equal(table[node.column.name], pa.scalar(True))  # null stays null: unknown
    elif isinstance(node, Not):
        out = pc.invert(evaluate(node.item, table))
    else:
        combine = pc.and_kleene if node.op == "and" else pc.or_kleene
        out = evaluate(node.items[0], table)
        for item in node.items[1:]:
            out = combine(out, evaluate(item, table))
    if isinstance(out, pa.Scalar):  # only when both sides were constants, which check() refuses
        out = pa.array([out.as_py()] * table.num_rows, pa.bool_())
    return out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out], pa.bool_())
