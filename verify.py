r"""Answer extraction and answer-equivalence checking; `reward` is the RL reward.

API: extract_answer(text) -> content of the last top-level \boxed{}/\fbox{} (None if empty or unclosed),
else a `#### X` / "the answer is X" / "answer: X" fallback containing a digit, `$` or backslash.
is_equivalent(pred, gold) -> do the answers denote the same object. reward_with_reason(completion, gold)
-> (1.0 or 0.0, one of REASONS): equal, and written as the gold is, a result where the gold is a result
(`\boxed{27 + 82}` does not answer "Compute 27 + 82.", whose gold is 109: _not_as_asked); UNPARSABLE:
outside the language (and not equal to gold as text) or over a limit. reward -> its first element.
`_parse_cached` is the lru-cached parser.

Language: numbers (1,000, 1{,}000, 1e3, 0.\overline3, 2\frac12, 204_5, 2:3), exact arithmetic, roots, pi, e,
i, trig/log/exp, |x|, floor, !, \binom; % is 1/100; degrees and unit words are dropped (degrees are radians
inside trig; words that change a number, `46 \text{ dozen}`, `\text{at least } 46`, make it no answer);
variables (xy = x*y); equations (a name on the left is dropped, `f(x, y) =` too; a chain that holds is its
last member, `27 + 82 = 109` or `(x-2)(x+5) = x^2+3x-10`, one that does not, `5 = 3`, no answer;
`\frac{2}{3} \approx 0.67` is either side, `1 \approx 2` no answer), inequalities, intervals, unions, sets,
tuples, solution lists, \pm, matrices; plain text compared as text, math in a \text{} around the whole
answer as math, a number in a \text{} anywhere as that number (`\text{5} \text{ cm}`). Rationals compare
exactly, closed forms numerically (zero difference at 175 and 700+ bits), a decimal against a non-terminating
value within REL_TOL; expressions in variables must agree at 4 deterministic points; relations are equal when
their side differences are proportional.

Known limits (a differential test against sympy found them; none is an answer our tasks call for): a decimal
anywhere in an answer loosens all of it to REL_TOL (`9x^2 - 12x - 96.000001` equals `9x^2 - 12x - 96`); the
sample points give only the first two variables both signs and denominators 7, 11, 13 (`\sin(1001\pi x)`
equals 0); `x(2) = 12` reads x(2) as a name, as `f(2) = 12`.

Safety: model text never reaches eval/exec/sympify/parse_expr. A regex tokenizer and a recursive-descent
parser build sympy objects directly (evaluate=False, exact rationals excepted); sympy never simplifies
or evalfs. Numerics run on mpmath's libmp kernels at explicit precision (thread-safe) with magnitude
checks before every operation that could explode. Bounds: the constants below, values < 2^65536, and a
0.8 s wall-clock budget per comparison (no signals, works in threads); any bound gives "not equal"
(UNPARSABLE for a prediction).
"""
from __future__ import annotations

import functools
import math
import random
import re
import time
from fractions import Fraction

import sympy
from mpmath import libmp
from sympy import Integer, Rational, S, Symbol

__all__ = ["extract_answer", "response_answer", "is_equivalent", "reward", "reward_with_reason",
           "NO_ANSWER", "UNPARSABLE", "WRONG", "RIGHT", "TRUNCATED", "REASONS", "REL_TOL"]

NO_ANSWER, UNPARSABLE, WRONG, RIGHT = "no_answer", "unparsable", "wrong", "right"
TRUNCATED = "truncated"  # cut off at the length limit (no EOS): not a finished solution, whatever it boxed
REASONS = (NO_ANSWER, UNPARSABLE, WRONG, RIGHT, TRUNCATED)

REL_TOL = Fraction(1, 10**6)        # decimal vs non-terminating value
MAX_ANSWER_CHARS = 1500
MAX_TOKENS = 600
MAX_DEPTH = 40                      # parser nesting
MAX_LITERAL_DIGITS = 120
MAX_SCI_EXPONENT = 400
MAX_POW_BITS = 20_000               # |exponent| * bits(base)
MAX_ROOT_BITS = 2048                # bits of a rational whose root is taken exactly (larger: left unevaluated)
MAX_SYMBOLIC_EXPONENT = 2000        # degree of a power of an expression in variables
MAX_FACTORIAL = 500
MAX_BINOM = 10_000
MAX_NUMBER_BITS = 200_000           # exact rationals
MAX_ITEMS = 32                      # list items, union pieces, matrix rows and columns
TIME_BUDGET_S = 0.8
_N_POINTS = 4                       # random points that must agree for expressions in variables

class _ParseError(Exception):
    """The answer is not in the supported language (text fallback may still match)."""

class _LimitError(Exception):
    """The answer exceeds a resource limit (never equal to anything)."""

class _Timeout(Exception):
    pass

def _reject_if(cond, msg: str, exc=_ParseError):
    """The guard used throughout: raise exc(msg) when cond holds."""
    if cond:
        raise exc(msg)

# ====================================================================================== extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_WRAP_RE = re.compile(r"\\(?:boxed|fbox|text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf|bm)(?![A-Za-z])")
_BRACE_RE = re.compile(r"\\\\|\\[{}]|[{}]")
_OPEN_RE = re.compile(r"[ \t\n]*\{")
_SPACE_ARG_RE = re.compile(r"[ \t]*([^\s$]+)")
_FALLBACK_RE = re.compile(r"####|\b(?:final\s+answer|the\s+answer|answer)\b\s*(?:is\b|was\b|:|=)",
                          re.IGNORECASE)
_MATH_WRAP_RE = re.compile(r"\$\$(.+)\$\$|\$(.+)\$|\\\((.+)\\\)|\\\[(.+)\\\]", re.S)

def _box_content(text: str, pos: int, box=True) -> tuple[str | None, int]:
    """The {...} argument at pos: (content, end), content None if unterminated. For a box, `\\boxed 5`
    takes the next run of non-space characters; otherwise a missing group is a parse error."""
    m = _OPEN_RE.match(text, pos)
    if m:
        depth = 0
        for b in _BRACE_RE.finditer(text, m.end() - 1):      # escaped braces and \\ skipped
            depth += {"{": 1, "}": -1}.get(b.group(), 0)
            if depth == 0:
                return text[m.end():b.start()], b.end()
        if box:
            return None, len(text)
    _reject_if(not box, "expected a {...} group")
    m = _SPACE_ARG_RE.match(text, pos)
    return ("", pos) if m is None else (m.group(1), m.end())

def _read_group(s: str, i: int) -> tuple[str, int]:
    return _box_content(s, i, box=False)

def _unwrap_boxes(s: str, text: bool = False) -> str:
    """`\\boxed{\\boxed{5}}` -> `5` (only when the box spans the whole string); with `text`, text and font
    commands too: `\\textbf{\\frac{11}{12}}` -> `\\frac{11}{12}`, read as math (inside an answer, \\text{} is a label
    or a unit)."""
    for _ in range(20):
        t = s.strip()
        m = (_WRAP_RE if text else _BOX_RE).match(t)
        content, end = _box_content(t, m.end()) if m else (None, 0)
        if content is None or t[end:].strip(" .,;$"):
            return t
        s = content
    return s.strip()

def _fallback_answer(text: str) -> str | None:
    """Text after the last `####` / "the answer is" marker: its first sentence outside $...$."""
    last = None
    for last in _FALLBACK_RE.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end():last.end() + 400].lstrip(" \t:")
    line = (rest.lstrip() if rest.startswith("\n") else rest).split("\n", 1)[0]
    cand, in_math = line, False
    for k, ch in enumerate(line):
        in_math ^= ch == "$"
        if not in_math and (ch == "." and line[k + 1:k + 2].strip() == "" or line.startswith(" I hope", k)):
            cand = line[:k]
            break
    k = cand.rfind(" is ")      # "Final Answer: The largest $n$ is 34" -> 34
    if k >= 0 and cand[:k].count("$") % 2 == 0:
        cand = cand[k + 4:]
    cand = cand.strip().rstrip(".,;:!?").strip()
    m = _MATH_WRAP_RE.fullmatch(cand)
    if m:
        cand = next(g for g in m.groups() if g is not None).strip()
    return cand if cand and re.search(r"[\d$\\]", cand) else None

def extract_answer(text: str) -> str | None:
    r"""Content of the last top-level \boxed{} / \fbox{} (see module docstring), else a fallback."""
    if not isinstance(text, str) or not text:
        return None
    m = _BOX_RE.search(text)
    if m is None:
        return _fallback_answer(text)
    while m is not None:
        last, pos = _box_content(text, m.end())
        if last is None:          # unterminated: everything after it is inside it
            return None
        m = _BOX_RE.search(text, pos)
    return _unwrap_boxes(last) or None

# ====================================================================================== normalization

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": r"\times ", "\u22c5": r"\cdot ",
    "\u00b7": r"\cdot ", "\u00f7": r"\div ", "\u03c0": r"\pi ", "\u221e": r"\infty ", "\u221a": r"\sqrt ",
    "\u00b0": r"^\circ ", "\u2264": r"\le ", "\u2265": r"\ge ", "\u2260": r"\ne ", "\u222a": r"\cup ",
    "\u2229": r"\cap ", "\u2205": r"\emptyset ", "\u00b1": r"\pm ", "\u2213": r"\mp ", "\u2208": r"\in ",
    "\u00b2": "^2", "\u00b3": "^3", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2032": "'",
    "\u00bd": "(1/2)", "\u00bc": "(1/4)", "\u00be": "(3/4)", "\u2248": r"\approx ", "\uff0c": ",",
    "\u2044": "/", "\u200b": "", "\u2060": "", "\ufeff": "",  # fraction slash; zero-width space, joiner, BOM
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_THIN_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\\[,!]|\{,\}|,\\!|\{,\}\\!)(?=\d{3}(?!\d))")
_SPACE_THOUSANDS_RE = re.compile(r"^[+-]?[1-9]\d{0,2}(?: \d{3})+(?:\.\d+)?$")
_MIXED_RE = re.compile(r"^(-?\d+)\s+(\d+)\s*/\s*(\d+)$")
_DELIM_RE = re.compile(r"(?<!\\)\\[\[\]()]|\\\$|\$")
_TRAIL_RE = re.compile(r"(?:\s|[.,;:]|\\\\|\\quad|\\qquad|\\[,;:! ])+$")
_TEXT_KEY_CMD_RE = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf|"
                              r"operatorname|boxed|fbox|displaystyle|left|right)(?![A-Za-z])")
_TEXTY_RE = re.compile(r"[a-z0-9 .,+\-/]+")

def _unicode(s: str) -> str:
    return _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], s)

def _prenormalize(s: str) -> str:
    if len(s) > MAX_ANSWER_CHARS:
        raise _LimitError("answer too long")
    s = _THIN_THOUSANDS_RE.sub("", _DELIM_RE.sub(" ", _unicode(s)))
    s = _TRAIL_RE.sub("", s).strip()
    if _SPACE_THOUSANDS_RE.match(s):
        s = s.replace(" ", "")
    m = _MIXED_RE.match(s)      # plain-text mixed number `2 1/2`
    return f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}" if m else s

def _text_key(s: str) -> str:
    """Loose textual form for non-math answers: markup, spaces and case removed, except that digits kept
    apart stay apart (one space), so that `1 2` is not the number 12, unless three digits follow the gap
    (a thousands separator: `1\\ 000` is 1000)."""
    s = _TEXT_KEY_CMD_RE.sub("", _unicode(s))
    gap = r"(?<=\d)(?:\\[,;:! ]|[{}$\s~]|\\\\)+"
    s = re.sub(gap + r"(?=\d{3}(?!\d))", "", s)
    s = re.sub(gap + r"(?=\d)", "\x00", s)  # (a mark the next line keeps)
    s = re.sub(r"\\[,;:! ]|[{}$\s~]|\\\\", "", s).replace("\x00", " ")
    s = s.lower().strip(".,;:")
    m = re.fullmatch(r"\(([a-z0-9]+)\)", s)
    return m.group(1) if m else s

def _text_match(pred: str, gold: str) -> bool:
    """Equal plain-text keys (letters, digits and light punctuation only: code never matches)."""
    kp = _text_key(pred)
    return kp == _text_key(gold) and _TEXTY_RE.fullmatch(kp) is not None and re.search(r"[a-z0-9]", kp) is not None

# ====================================================================================== tokenizer

_TOK_RE = re.compile(r"""
  (?P<ws>\s+|~)
| (?P<thou>[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?(?![\d]))
| (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
| (?P<cmd>\\[A-Za-z]+)
| (?P<esc>\\[^A-Za-z])
| (?P<word>[A-Za-z]+)
| (?P<op>\*\*|<=|>=|!=|!!|=<|=>|[-+*/^_=<>(){}\[\],;!|&'%:])
""", re.X)

_FUNC_NAMES = set("sin cos tan cot sec csc arcsin arccos arctan arccot sinh cosh tanh ln log exp sqrt abs "
                  "asin acos atan".split())
# LaTeX commands: `names=kind:value` (value defaults to the name). Kinds: skip (ignored), text (\text{..}),
# wrap (\mathrm{..}: a word, or its tokenized content), and token kinds of the parser.
_CMD_SPEC = r"""
  left,right,big,Big,bigg,Bigg,bigl,bigr,Bigl,Bigr,biggl,biggr,displaystyle,textstyle,scriptstyle,limits,quad,
  qquad,hfill,nonumber,notag,middle,angle,measuredangle,triangle=skip
  text,textbf,textit,textrm,textsf,textnormal,mbox,hbox,emph=text
  mathrm,mathbf,mathit,mathsf,mathtt,boldsymbol,bm,operatorname,mathbb,boxed,fbox,mathcal,mathnormal=wrap
  alpha,beta,gamma,delta,epsilon,varepsilon,zeta,eta,theta,vartheta,iota,kappa,lambda,mu,nu,xi,rho,sigma,tau,
  upsilon,phi,varphi,chi,psi,omega,Gamma,Delta,Theta,Lambda,Xi,Sigma,Upsilon,Phi,Psi,Omega,e=id
  frac,dfrac,tfrac,cfrac=cmd:frac sqrt=cmd:sqrt binom,dbinom,tbinom=cmd:binom overline=cmd:overline
  pi=const:pi infty,infinity=const:oo emptyset,varnothing=const:empty
  cdot,times,ast=op:* div=op:/ pm=op:pm mp=op:mp le,leq,leqslant=op:<= ge,geq,geqslant=op:>= lt=op:< gt=op:>
  ne,neq=op:!= approx=op:approx in=op:in cup=op:cup cap=op:cap circ,degree=op:deg lbrace=op:\{ rbrace=op:\}
  langle=op:<< rangle=op:>> lvert,rvert,vert,mid=op:| lfloor=op:lfloor rfloor=op:rfloor lceil=op:lceil
  rceil=op:rceil dots,ldots,cdots=op:... land,wedge=word:and lor,vee=word:or begin=begin end=end
"""
_CMDS = {f: ("func", f) for f in _FUNC_NAMES}
for _group in re.sub(r",\s+", ",", _CMD_SPEC).split():
    _names, _, _kv = _group.partition("=")
    for _name in _names.split(","):
        _CMDS[_name] = (_kv.partition(":")[0], _kv.partition(":")[2] or _name)
_MATRIX_ENVS = {"pmatrix", "bmatrix", "matrix", "smallmatrix", "Bmatrix", "array"}
_TEXT_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)")
_ESCAPES = {"{": r"\{", "}": r"\}", "%": "%", "|": "|", "\\": "rowsep"}

def _tokenize(s: str, thousands: bool, depth: int = 0) -> tuple[list, bool, bool]:
    """-> (tokens, saw_thousands, has_decimal). A token is (kind, value, space_before). With thousands
    False, `1,234` is the number 1 followed by a comma."""
    _reject_if(depth > 8, "markup nested too deep", _LimitError)
    toks: list = []
    saw_thou = has_dec = sp = False
    i = 0
    while i < len(s):
        m = _TOK_RE.match(s, i)
        _reject_if(m is None, f"unexpected character {s[i]!r}")
        kind, text, i = m.lastgroup, m.group(), m.end()
        name = text[1:]
        ckind, val = _CMDS.get(name, (None, None)) if kind == "cmd" else (None, None)
        new, math = [], None  # math: markup content read as math, in a group of its own (below)
        if kind == "ws" or kind == "esc" and name in ",;:! " or ckind == "skip":
            sp = True
            if name in ("left", "right", "middle", "bigl", "bigr", "Bigl", "Bigr") and s[i:i + 1] == ".":
                i += 1
            continue
        if kind == "thou" and thousands:
            saw_thou, has_dec = True, has_dec or "." in text
            new = [("num", text.replace(",", ""))]
        elif kind == "thou":
            i = m.start() + len(text.split(",")[0])
            new = [("num", text.split(",")[0])]
        elif kind == "num":
            has_dec |= bool(re.search(r"\.\d|[eE]", text))
            new = [("num", text)]
        elif kind in ("word", "op"):
            new = [("id" if kind == "word" and len(text) == 1 else kind, text)]
        elif kind == "esc" and name in _ESCAPES:
            new = [("op", _ESCAPES[name])]
        elif kind == "esc" and name != "$":
            raise _ParseError(f"unsupported escape {text!r}")
        elif ckind == "text":
            content, i = _read_group(s, i)
            c = content.strip(" ~\\,;:!")
            if _TEXT_NUMBER_RE.fullmatch(c):  # a number set as text, `\text{5} \text{ cm}`: the number
                math = c
            else:
                new = [("op", "%")] if c in ("%", "\\%", "percent") else [("text", content)] if c else []
        elif ckind == "wrap":
            content, i = _read_group(s, i)
            c = content.strip()
            if name == "mathbb":       # only \mathbb{R} is supported (the parser rejects other constants)
                new = [("const", "R" if c == "R" else "unsupported")]
            elif re.fullmatch(r"(?:~|\\[ ,;:!]|\s)*[A-Za-z]{2,}", c) and name not in ("boxed", "fbox"):
                c = re.sub(r"~|\\[ ,;:!]|\s", "", c)
                new = [("func" if name == "operatorname" and c in _FUNC_NAMES else "text", c)]
            else:
                math = content
        elif ckind in ("begin", "end"):
            env, i = _read_group(s, i)
            env = env.strip().rstrip("*")
            _reject_if(env not in _MATRIX_ENVS, f"unsupported environment {env}")
            if name == "begin" and env == "array":
                i = _read_group(s, i)[1]      # column spec
            new = [(name, env)]
        elif ckind is not None:
            new = [(ckind, val)]
        elif kind == "cmd":
            raise _ParseError(f"unsupported command {text}")
        if math is not None:
            _reject_if(len(toks) >= MAX_TOKENS, "too many tokens", _LimitError)
            sub, t2, d2 = _tokenize(math, thousands, depth + 1)
            saw_thou, has_dec = saw_thou or t2, has_dec or d2
            new = [("op", "{")] + sub + [("op", "}")]
        for tok in new:      # sub-token lists are already (kind, value, space) triples
            toks.append(tok if len(tok) == 3 else (*tok, sp))
            sp = False
        if not new and ckind == "text":
            sp = True
        _reject_if(len(toks) > MAX_TOKENS, "too many tokens", _LimitError)
    return toks, saw_thou, has_dec

# ====================================================================================== values

class _Seq:
    """Collection. kind: 'tuple' (ordered), 'set' / 'pm' (unordered), 'list' (bare comma list),
    'matrix' (items are row tuples). pair=True for a parenthesised 2-tuple (may be an open interval)."""
    def __init__(self, kind, items, pair=False):
        self.kind, self.items, self.pair = kind, tuple(items), pair

class _SetV:
    """A subset of the real line: a union of pieces (lo, hi, lo_open, hi_open); a point is a closed
    piece with lo == hi. Endpoints are real closed forms or +-oo. Canonicalised only when compared."""
    def __init__(self, pieces):
        self.pieces = tuple(pieces)

class _Rel:
    """lhs op rhs with op in '=', '!=', '<', '<=' (> and >= are flipped)."""
    def __init__(self, op, lhs, rhs, value=None):
        if op in (">", ">="):
            op, lhs, rhs = op.replace(">", "<"), rhs, lhs
        self.op, self.lhs, self.rhs = op, lhs, rhs
        self.value = value  # `=` only: the right side as written (_value), the answer where both sides agree

class _Scalar:
    """A sympy expression; origin is the symbol of a stripped `x = ...` (or None). As written (see
    _not_as_asked): computed, a rational value written as a computation (`27 + 82`, `\\sqrt{4}`), not as a
    number; expanded, a polynomial written as a sum of distinct monomials with number coefficients."""
    def __init__(self, e, origin=None):
        self.e, self.origin, self.computed, self.expanded = e, origin, False, False

# Other parsed values: sympy expressions, a dict {symbol: value} for `x = 1, y = 2`,
# and a str (the text key) for a plain-text answer.
_PM = sympy.Dummy("pm")
_OO, _NOO = S.Infinity, S.NegativeInfinity
_REALS = _SetV([(_NOO, _OO, True, True)])
_E, _I = S.Exp1, S.ImaginaryUnit
_RELOPS = {"=", "<", "<=", ">", ">=", "!=", "in", "=<", "=>", "approx"}
_SEP_WORDS = {"and", "or"}
_PERCENT_WORDS = {"percent", "pct", "percentage"}
# words that change a number when they label it, so it is no answer (`46 \text{ dozen}`, `\text{at least } 46`)
# where the other words around it are dropped (`46 \text{ shells}`, `\text{Answer: } 46`)
_CHANGING_WORDS = set("pair pairs dozen dozens hundred hundreds thousand thousands million millions billion billions "
                      "trillion trillions score gross half halves quarter quarters squared cubed not no never least "
                      "most more less fewer greater over under above below except than minus negative plus".split())
_DEGREE_WORDS = {"degrees", "degree", "deg"}
_CONST_WORDS = {"pi": sympy.pi, "inf": _OO, "infty": _OO, "infinity": _OO, "oo": _OO}
_UNIT_WORDS = set("cm mm km kg mg ml mL ft yd hr hrs min mins sec secs lb lbs oz mph kmh sq cu units unit dollars "
                  "cents meters inches feet miles hours minutes seconds days".split())
_FUNC_ALIASES = {"arcsin": "asin", "arccos": "acos", "arctan": "atan", "arccot": "acot", "ln": "log"}
_INVERSE = {"sin", "cos", "tan", "cot", "sec", "csc"}     # f^{-1} is sympy's "a" + f

def _changes_value(tok) -> bool:
    """Is a word or \\text{} token one of _CHANGING_WORDS, or a text holding one?"""
    return tok[0] in ("word", "text") and not _CHANGING_WORDS.isdisjoint(re.findall(r"[a-z]+", tok[1].lower()))

def _is_expr(v) -> bool:
    return isinstance(v, sympy.Expr)

# ====================================================================================== safe construction
# sympy objects serve only as an immutable expression container. Automatic evaluation is used for
# exact rational arithmetic alone; every other node is built with evaluate=False, because sympy's
# evaluation and assumption queries call its adaptive numerics, which can run for ever (e.g. on
# sin(sin(10^158 i))). All numerics are done by the guarded evaluator below.

def _arith(*vs, finite=True):
    """Operands of arithmetic and functions: expressions without infinities or undefined values
    (infinity is a value on its own and an interval endpoint, never an operand)."""
    for v in vs:
        _reject_if(not isinstance(v, sympy.Expr), "arithmetic on a collection")
        _reject_if(finite and v.has(S.NaN, S.ComplexInfinity, _OO, _NOO), "arithmetic with infinity")

def _rat_bits(r) -> int:
    return max(int(r.p).bit_length(), int(r.q).bit_length())

def _check_size(v):
    _reject_if(isinstance(v, Rational) and _rat_bits(v) > MAX_NUMBER_BITS, "number too large", _LimitError)
    return v

def _binop(op, a, b):
    """a + b, a * b or a / b: exact for rationals, else an unevaluated node (x + 0, x * 1 simplified)."""
    _arith(a, b)
    _reject_if(op == "/" and b == 0, "division by zero")
    if isinstance(a, Rational) and isinstance(b, Rational):
        return _check_size(a + b if op == "+" else a * b if op == "*" else a / b)
    if op == "/":
        return _binop("*", a, 1 / b if isinstance(b, Rational) else sympy.Pow(b, S.NegativeOne, evaluate=False))
    unit = 0 if op == "+" else 1
    return b if a == unit else a if b == unit else (sympy.Add if op == "+" else sympy.Mul)(a, b, evaluate=False)

_add, _mul, _div = (functools.partial(_binop, op) for op in "+*/")

def _neg(a):
    _arith(a, finite=False)
    if isinstance(a, Rational) or a in (_OO, _NOO):
        return -a
    return sympy.Mul(S.NegativeOne, a, evaluate=False)

def _sub(a, b):
    return _add(a, _neg(b))

def _pow(b, e):
    _arith(b, e)
    if isinstance(e, Rational):
        mag = -(-abs(int(e.p)) // int(e.q))
        if mag > 1 and not (isinstance(b, Rational) and abs(b) in (0, 1)):
            bits = max([1] + [_rat_bits(a) for a in sympy.preorder_traversal(b) if isinstance(a, Rational)])
            _reject_if(mag * bits > MAX_POW_BITS, "power too large", _LimitError)
            _reject_if(b.free_symbols and mag > MAX_SYMBOLIC_EXPONENT, "degree too large", _LimitError)
        _reject_if(b == 0 and e.is_negative, "division by zero")
        if isinstance(b, Rational) and (isinstance(e, Integer) or int(e.q) <= 64):
            if isinstance(e, Integer) or _rat_bits(b) <= MAX_ROOT_BITS:
                return _check_size(sympy.Pow(b, e))      # exact: 2^10, 8^(1/3), 12^(1/2)
            return _big_root(b, e)
        if e == 1:
            return b
    return sympy.Pow(b, e, evaluate=False)

def _big_root(b, e):
    """b^e, e = p/q, for a rational b longer than MAX_ROOT_BITS, where sympy's search for a perfect power
    factors b in time growing with the cube of its length (14 s for (3^9000+1)^(1/2)): exact if b > 0 is a
    perfect q-th power (integer Newton steps: milliseconds), else left unevaluated (compared numerically)."""
    q = int(e.q)
    (rn, exact_n), (rd, exact_d) = sympy.integer_nthroot(abs(int(b.p)), q), sympy.integer_nthroot(int(b.q), q)
    if b > 0 and exact_n and exact_d:
        return _check_size(Rational(rn, rd) ** int(e.p))
    return sympy.Pow(b, e, evaluate=False)

def _root(x, n):
    _arith(x, n)
    _reject_if(n.is_number and not (isinstance(n, Integer) and 0 < n <= 100), "bad root index")
    if isinstance(n, Integer) and n % 2 == 1 and not x.free_symbols and _real_sign(x) == -1:
        return _neg(_pow(_neg(x), Rational(1, int(n))))   # real odd root of a negative number
    return _pow(x, Rational(1, int(n)) if isinstance(n, Integer) else _div(S.One, n))

def _fn(f, *args):
    _arith(*args)
    return f(*args, evaluate=False)

def _floor_ceil(v, floor: bool):
    _arith(v)
    if isinstance(v, Rational):
        q = Fraction(int(v.p), int(v.q))
        return Integer(math.floor(q) if floor else math.ceil(q))
    if v.free_symbols:
        return (sympy.floor if floor else sympy.ceiling)(v, evaluate=False)
    x = _real_key(v)
    _reject_if(x is None, "floor of a non-real or undecidable value")
    fl = libmp.mpf_floor(x, _P2, _RND)
    frac = libmp.mpf_sub(x, fl, _P2, _RND)
    if _bits(frac) < -200 or _bits(libmp.mpf_sub(libmp.fone, frac, _P2, _RND)) < -200:
        raise _ParseError("floor too close to an integer to decide")
    return Integer(libmp.to_int(fl)) + (0 if floor else 1)

def _factorial(a, double=False):
    _arith(a)
    if not a.is_number and not double:
        return sympy.factorial(a, evaluate=False)
    _reject_if(not isinstance(a, Integer) or a < 0, "factorial of a non-natural number or symbolic double factorial")
    _reject_if(a > MAX_FACTORIAL * (2 if double else 1), "factorial too large", _LimitError)
    return sympy.factorial2(a) if double else sympy.factorial(a)

def _binom(n, k):
    _arith(n, k)
    if not (n.is_number or k.is_number):
        return sympy.binomial(n, k, evaluate=False)
    _reject_if(not (isinstance(n, Integer) and isinstance(k, Integer)), "binomial of non-integers")
    _reject_if(abs(n) > MAX_BINOM or abs(k) > MAX_BINOM, "binomial too large", _LimitError)
    return sympy.binomial(n, k)

def _subs_pm(e, val):
    """Substitute the \\pm placeholder, rebuilding every node unevaluated (exact rationals excepted)."""
    if e is _PM or not e.args or not e.has(_PM):
        return val if e is _PM else e
    args = [_subs_pm(a, val) for a in e.args]
    if isinstance(e, (sympy.Add, sympy.Mul)):
        return functools.reduce(_add if isinstance(e, sympy.Add) else _mul, args)
    return _pow(*args) if isinstance(e, sympy.Pow) else e.func(*args, evaluate=False)

def _number(text: str):
    if sum(ch.isdigit() for ch in re.split(r"[eE]", text)[0]) > MAX_LITERAL_DIGITS:
        raise _LimitError("literal too long")
    m = re.search(r"[eE]([+-]?\d+)$", text)
    if m and (len(m.group(1)) > 5 or abs(int(m.group(1))) > MAX_SCI_EXPONENT):
        raise _LimitError("exponent too large")
    return Rational(Fraction(text))

# ====================================================================================== numerics
# Fixed-precision complex evaluation with mpmath's libmp kernels (explicit precision: thread-safe, no
# global context) and magnitude checks before every operation that could explode. Rounding noise is
# estimated from the largest intermediate magnitude.

_P1, _P2 = 175, 700                 # working precisions (bits): normal, and confirmation of zeros
_MAX_PREC = 4000                    # cap of the confirmation precision
_MAX_GAMMA_PREC = 1000
_MAX_MAG_BITS = 1 << 16             # |value| < 2**65536
_MAX_TRIG_BITS = 1024               # |Re z| < 2**1024 for trigonometric functions
_MAX_EXP_ARG = 40_000               # Re z for exp(z): result < 2**57708
_MAX_EVAL_NODES = 20_000
_RND = libmp.round_nearest
_ZERO = (libmp.fzero, libmp.fzero)
_ONE = (libmp.fone, libmp.fzero)
_TRIG = {"sin": (1, 0), "cos": (2, 0), "tan": (1, 2), "cot": (2, 1), "sec": (0, 2), "csc": (0, 1)}  # num/den
_ARC = {"asin": libmp.mpc_asin, "acos": libmp.mpc_acos, "atan": libmp.mpc_atan,
        "acsc": libmp.mpc_asin, "asec": libmp.mpc_acos, "acot": libmp.mpc_atan}     # acsc z = asin(1/z) ...
_HYP = {"sinh": libmp.mpc_sinh, "cosh": libmp.mpc_cosh, "tanh": libmp.mpc_tanh}

class _NumFail(Exception):
    pass

_EVAL_ERRORS = (_NumFail, ZeroDivisionError, ValueError, OverflowError, TypeError, ArithmeticError,
                RecursionError, KeyError)

def _bits(x) -> int:
    """Magnitude exponent of an mpf (|x| < 2**bits); very negative for zero."""
    if x == libmp.fzero:
        return -(1 << 30)
    _reject_if(x in (libmp.fnan, libmp.finf, libmp.fninf), "not finite", _NumFail)
    return x[2] + x[3]

def _zbits(z) -> int:
    return max(_bits(z[0]), _bits(z[1]))

def _mag(z):
    return libmp.mpf_add(libmp.mpf_abs(z[0]), libmp.mpf_abs(z[1]), _P1)

class _Eval:
    """Value of a sympy expression as (re, im) mpf tuples at `prec` bits; symbols bound by `env`."""

    def __init__(self, prec, env=None, deadline=None):
        self.P, self.env, self.deadline = prec, env or {}, deadline
        self.memo = {}
        self.maxbits = self.nodes = 0
        self.eff = prec                  # lowest precision actually used (gamma runs at <= 1000 bits)

    def noise_bits(self) -> int:
        """log2 of a generous bound on the accumulated rounding error."""
        return self.maxbits - self.eff + 24

    def __call__(self, e):
        hit = self.memo.get(e)
        if hit is not None:
            return hit
        self.nodes += 1
        _reject_if(self.nodes > _MAX_EVAL_NODES, "expression too large", _NumFail)
        if self.deadline is not None and self.nodes % 8 == 0 and time.monotonic() > self.deadline:
            raise _Timeout()
        z = self._eval(e)
        _reject_if(_zbits(z) > _MAX_MAG_BITS, "overflow", _NumFail)
        z = tuple(c if _bits(c) >= -_MAX_MAG_BITS else libmp.fzero for c in z)     # underflow to 0
        self.maxbits = max(self.maxbits, _zbits(z))
        self.memo[e] = z
        return z

    def _eval(self, e):
        P = self.P
        if isinstance(e, Rational):
            _reject_if(_rat_bits(e) > _MAX_MAG_BITS, "overflow", _NumFail)
            return (libmp.from_rational(int(e.p), int(e.q), P, _RND), libmp.fzero)
        if e is S.Pi or e is S.Exp1:
            return ((libmp.mpf_pi if e is S.Pi else libmp.mpf_e)(P, _RND), libmp.fzero)
        if e is S.ImaginaryUnit:
            return (libmp.fzero, libmp.fone)
        if isinstance(e, sympy.Symbol):
            if e in self.env:
                return self.env[e]
            raise _NumFail("free symbol")
        if isinstance(e, (sympy.Add, sympy.Mul)):
            acc = _ZERO if isinstance(e, sympy.Add) else _ONE
            for a in e.args:
                acc = (libmp.mpc_add if isinstance(e, sympy.Add) else libmp.mpc_mul)(acc, self(a), P, _RND)
                _reject_if(_zbits(acc) > _MAX_MAG_BITS, "overflow", _NumFail)
            return acc
        if isinstance(e, sympy.Pow):
            return self._exp(self(e.args[1])) if e.args[0] is S.Exp1 else self._pow(self(e.args[0]), e.args[1])
        if isinstance(e, sympy.binomial):
            n, k = (self(a) for a in e.args)
            g = [self._gamma(libmp.mpc_add(z, _ONE, P, _RND)) for z in (n, k, libmp.mpc_sub(n, k, P, _RND))]
            return libmp.mpc_div(g[0], libmp.mpc_mul(g[1], g[2], P, _RND), P, _RND)
        _reject_if(not isinstance(e, sympy.Function) or len(e.args) != 1, f"unsupported {type(e).__name__}", _NumFail)
        z = self(e.args[0])
        name = type(e).__name__
        if name == "exp":
            return self._exp(z)
        if name == "factorial":
            return self._gamma(libmp.mpc_add(z, _ONE, P, _RND))
        if name == "log":
            _reject_if(z == _ZERO, "log 0", _NumFail)
            return libmp.mpc_log(z, P, _RND)
        if name in _TRIG:
            _reject_if(_bits(z[0]) > _MAX_TRIG_BITS or _bits(z[1]) > 14, "trigonometric argument too large", _NumFail)
            vals = (_ONE, libmp.mpc_sin(z, P, _RND), libmp.mpc_cos(z, P, _RND))
            num, den = _TRIG[name]
            return vals[num] if den == 0 else libmp.mpc_div(vals[num], vals[den], P, _RND)
        if name in _ARC:
            return _ARC[name](libmp.mpc_div(_ONE, z, P, _RND) if name in ("acot", "asec", "acsc") else z, P, _RND)
        if name in _HYP:
            _reject_if(_bits(z[0]) > 15 or _bits(z[1]) > _MAX_TRIG_BITS, "hyperbolic argument too large", _NumFail)
            return _HYP[name](z, P, _RND)
        if name == "Abs":
            return (libmp.mpc_abs(z, P, _RND), libmp.fzero)
        if name in ("floor", "ceiling") and z[1] == libmp.fzero:
            return ((libmp.mpf_floor if name == "floor" else libmp.mpf_ceil)(z[0], P, _RND), libmp.fzero)
        raise _NumFail(f"unsupported function {name}")

    def _gamma(self, z):
        _reject_if(_zbits(z) > 10, "gamma argument too large", _NumFail)
        self.eff = min(self.eff, self.P, _MAX_GAMMA_PREC)
        return libmp.mpc_gamma(z, min(self.P, _MAX_GAMMA_PREC), _RND)

    def _exp(self, z):
        if libmp.mpf_cmp(z[0], libmp.from_int(_MAX_EXP_ARG)) > 0 or _bits(z[1]) > _MAX_TRIG_BITS:
            raise _NumFail("exp overflow")
        if libmp.mpf_cmp(z[0], libmp.from_int(-_MAX_EXP_ARG)) < 0:
            return _ZERO                                          # underflow
        return libmp.mpc_exp(z, self.P, _RND)

    def _pow(self, zb, x):
        """zb ** x: repeated multiplication for an integer or half-integer x, else exp(x log zb)."""
        P = self.P
        if isinstance(x, Integer) or isinstance(x, Rational) and x.q == 2:
            n = int(x.p)
            if zb == _ZERO:
                _reject_if(n < 0, "0 to a negative power", _NumFail)
                return _ZERO if n > 0 else _ONE
            if abs(n) * max(abs(_zbits(zb)), 1) > _MAX_MAG_BITS * (x.q if x.q == 2 else 1):
                raise _NumFail("overflow")
            return libmp.mpc_pow_int(libmp.mpc_sqrt(zb, P, _RND) if x.q == 2 else zb, n, P, _RND)
        zx = self(x)
        if zb == _ZERO:
            if libmp.mpf_cmp(zx[0], libmp.fzero) > 0:
                return _ZERO
            raise _NumFail("0 to a non-positive power")
        return self._exp(libmp.mpc_mul(zx, libmp.mpc_log(zb, P, _RND), P, _RND))

def _agree(a, b, env, loose: bool, deadline=None) -> bool | None:
    """Numerically, is a == b? True / False, or None if undecidable. Exact mode: the difference must
    vanish within rounding noise at 175 bits and again at 700 bits more than the largest magnitude
    met. Loose mode (a decimal literal is involved): |a - b| <= REL_TOL max(|a|, |b|) suffices."""
    prec = _P1
    try:
        for step in (1, 2):
            ev = _Eval(prec, env, deadline)
            za, zb = ev(a), ev(b)
            md = _mag(libmp.mpc_sub(za, zb, prec, _RND))
            scale = _mag(za) if libmp.mpf_cmp(_mag(za), _mag(zb)) >= 0 else _mag(zb)
            if loose and libmp.mpf_le(md, libmp.mpf_mul(_LOOSE, scale, _P1)):
                return True
            if md != libmp.fzero and _bits(md) > ev.noise_bits():
                return False
            if step == 2:       # zero within noise at the higher precision: trust only tiny noise
                return True if ev.noise_bits() < -500 else None
            prec = min(_P2 + max(0, ev.maxbits), _MAX_PREC)
    except _EVAL_ERRORS:
        return None

def _real(v):
    """(value, noise bits) at 700 bits of a closed form that is provably real, else None."""
    ev = _Eval(_P2)
    try:
        z = ev(v)
    except _EVAL_ERRORS:
        return None
    return None if _bits(z[1]) > ev.noise_bits() else (z[0], ev.noise_bits())

def _real_sign(v) -> int | None:
    """Sign of a real closed form (-1, 0, 1); None if not real or too close to 0 to decide."""
    if isinstance(v, Rational):
        return (int(v.p) > 0) - (int(v.p) < 0)
    r = _real(v)
    return None if r is None or _bits(r[0]) <= r[1] else -1 if r[0][0] else 1

def _real_key(v):
    """Sort key for a real endpoint: mpf (700 bits), +-oo mapped to mpmath infinities; None if not real."""
    if v is _OO or v is _NOO:
        return libmp.finf if v is _OO else libmp.fninf
    r = _real(v)
    return None if r is None else r[0]

_LOOSE = libmp.from_rational(REL_TOL.numerator, REL_TOL.denominator, _P1, _RND)
_TIGHT = libmp.from_rational(1, 10**30, _P1, _RND)      # ratio constancy in the exact mode

# ====================================================================================== parser

_END = (None, None, False)

class _Parser:
    """Recursive descent over the token list, building sympy values and the collection classes:
    answer := item (sep item)*, item := setexpr (relop setexpr)* with unit annotations skipped,
    setexpr := expr (cup expr)*, expr := [pm] term ((+|-|pm) term)*, term := unary ((*|/) unary |
    implicit power)*, unary := (+|-) unary | power, power := postfix(atom) [^ unary]."""

    def __init__(self, toks, exact: bool = True):
        self.t, self.i, self.depth, self.abs_open, self.trig = toks, 0, 0, 0, 0
        self.exact = exact  # `a \approx b` with no name on the left: a (else b; _parse_cached reads both)
        self.deadline = time.monotonic() + TIME_BUDGET_S  # (for the checks of chains and approximations)

    def peek(self, k=0):
        return self.t[self.i + k] if self.i + k < len(self.t) else _END

    def next(self):
        _reject_if(self.i >= len(self.t), "unexpected end")
        self.i += 1
        return self.t[self.i - 1]

    def at(self, *vals, k=0):
        """Is the token k ahead an operator with one of these values?"""
        kind, val, _ = self.peek(k)
        return kind == "op" and val in vals

    def accept(self, *vals):
        """Consume an operator with one of these values: -> its value, or None if not there."""
        if not self.at(*vals):
            return None
        self.i += 1
        return self.t[self.i - 1][1]

    def expect(self, val):
        _reject_if(not self.at(val), f"expected {val}")
        self.i += 1

    def nested(self, f, *args):
        """f(*args) one nesting level deeper (bounded by MAX_DEPTH)."""
        self.depth += 1
        _reject_if(self.depth > MAX_DEPTH, "nesting too deep", _LimitError)
        v = f(*args)
        self.depth -= 1
        return v

    def split_token(self, first_kind, rest_kind):
        """Split the current token after its first character (LaTeX one-token arguments: \\frac12)."""
        kind, val, sp = self.t[self.i]
        self.t = self.t[:self.i] + [(first_kind, val[0], sp), (rest_kind, val[1:], False)] + self.t[self.i + 1:]

    def braced(self, f):
        """f() on the contents of an optional {...} around the cursor."""
        br = self.accept("{")
        v = f()
        if br:
            self.expect("}")
        return v

    # -- top level: separated items, each an expression with relations and unit annotations
    def at_sep(self):
        kind, val, _ = self.peek()
        if kind == "text":
            c = val.strip().lower().strip(",").strip()
            return c in _SEP_WORDS or (c == "" and "," in val)
        return self.at(",", ";") or kind == "word" and val.lower() in _SEP_WORDS

    def answer(self):
        items = [self.item()]
        while self.at_sep():
            while self.at_sep():
                self.next()
            if self.peek() is _END:
                break
            items.append(self.item())
            _reject_if(len(items) > MAX_ITEMS, "too many items", _LimitError)
        _reject_if(self.peek() is not _END, f"unexpected token {self.peek()[1]!r}")
        return items

    def item(self):
        start = j = self.i
        while j < len(self.t) and self.t[j][0] in ("text", "word"):
            j += 1
        if start < j and self.at("=", "in", "approx", k=j - start):
            self.i, parts = j, [S.Zero]     # a label such as `\text{Area} = 15`: only a name
        elif (j := self.arguments_end(start)) is not None:
            self.i, parts = j, [S.Zero]     # `f(x, y) = x + y`: a name whose arguments are not one value
        else:
            while self.peek()[0] == "text" and not self.at_sep() and self.peek(1) is not _END:
                _reject_if(_changes_value(self.next()), "a label that changes the value")  # `\text{Answer: }`
                start = self.i
            parts = [self.setexpr()]
            if _is_expr(parts[0]) and self.accept(":"):          # ratio 2:3 = 2/3
                parts = [_div(parts[0], self.expr())]
        spans = [self.t[start:self.i]]  # each part's tokens (the first: a name to drop, or the value)
        self.skip_units()
        ops = []
        while self.at(*_RELOPS):
            op = self.next()[1]
            ops.append({"=<": "<=", "=>": ">="}.get(op, op))
            start = self.i
            parts.append(self.setexpr())
            spans.append(self.t[start:self.i])
            self.skip_units()
            _reject_if(len(ops) > 8, "relation chain too long")
        return _build_item(parts, ops, spans, self.exact, self.deadline)

    def arguments_end(self, start: int) -> int | None:
        """The end of `f(x, y)` or `g(1, 2)` where `=` follows it: a name (_name_like) whose arguments, with
        their comma, are no value to parse (`f(x) = ...` parses, and _build_item drops it); else None."""
        t, depth = self.t, 0
        if not (start + 1 < len(t) and t[start][0] == "id" and t[start + 1][1] == "("):
            return None
        for j in range(start + 1, len(t)):
            depth += {"(": 1, ")": -1}.get(t[j][1], 0) if t[j][0] == "op" else 0
            if depth == 0:
                break
        else:
            return None
        span = t[start:j + 1]
        if self.at("=", k=j + 1 - self.i) and any(v == "," for _, v, _ in span) and _name_like(span)[0]:
            return j + 1
        return None

    def unit_start(self, tok) -> bool:
        kind, val, sp = tok
        if kind == "text":
            return bool(val.strip()) and val.strip().lower().strip(",") not in _SEP_WORDS
        lw = val.lower() if kind == "word" else ""
        if not lw or lw in _SEP_WORDS or lw in _FUNC_NAMES or lw in _CONST_WORDS or lw in _PERCENT_WORDS:
            return False
        return lw in _DEGREE_WORDS or val in _UNIT_WORDS or (len(val) >= 3 and sp) or len(val) >= 4

    def skip_units(self):
        """Drop a unit annotation after a value: words, \\text{}, ^2, /, degree marks."""
        if not self.unit_start(self.peek()):
            return
        while (tok := self.peek()) is not _END:
            if tok[0] == "text" and not self.at_sep() or tok[0] == "word" and tok[1].lower() not in _SEP_WORDS \
                    or self.at("deg"):
                _reject_if(_changes_value(self.next()), "a unit that changes the value")
            elif self.accept("^", "**"):
                if self.peek()[0] == "num":
                    self.next()
                elif not self.at("{"):
                    raise _ParseError("bad unit power")
                else:
                    self.braced(lambda: self.peek()[0] == "num" and self.next())
            elif self.at("/", "*") and self.peek(1)[0] in ("text", "word"):
                self.next()
            else:
                return

    # -- expressions
    def setexpr(self):
        left = self.expr()
        while self.accept("cup"):
            left = _SetV(_as_set(left).pieces + _as_set(self.expr()).pieces)
            _reject_if(len(left.pieces) > MAX_ITEMS, "too many pieces", _LimitError)
        _reject_if(self.at("cap"), "intersections are not supported")
        return left

    def expr(self):
        return self.nested(self._expr)

    def _expr(self):
        lead = self.next()[1] if self.at("pm", "mp") else None
        result = self.term()
        if lead:
            result = _mul(_PM if lead == "pm" else _neg(_PM), result)
        while self.at("+", "-", "pm", "mp"):
            op = self.next()[1]
            rhs = self.term()
            rhs = _mul(_PM, rhs) if op in ("pm", "mp") else rhs
            result = _add(result, rhs) if op in ("+", "pm") else _sub(result, rhs)
        return result

    def implicit_start(self, tok) -> bool:
        kind, val = tok[0], tok[1]
        if kind in ("id", "const", "func", "cmd", "begin"):
            return not (kind == "cmd" and val == "overline")
        if kind == "word":
            return not self.unit_start(tok) and val.lower() not in _SEP_WORDS | _PERCENT_WORDS | _DEGREE_WORDS
        return kind == "op" and (val in ("(", "lfloor", "lceil", "<<") or val == "|" and self.abs_open == 0)

    def term(self):
        left = self.unary()
        while (tok := self.peek()) is not _END:
            if self.accept("*", "/"):
                left = (_mul if tok[1] == "*" else _div)(left, self.unary())
            elif self.implicit_start(tok):
                left = _mul(left, self.power())
            else:
                break
        return left

    def unary(self):
        if self.at("-", "+"):
            neg = self.next()[1] == "-"
            v = self.nested(self.unary)
            return _neg(v) if neg else v
        return self.power()

    def degree_follows(self) -> int:
        """Number of tokens of a `^\\circ` / `^{\\circ}` at the cursor (0 if none)."""
        if self.at("^", "**") and self.at("deg", k=1):
            return 2
        return 4 if self.at("^", "**") and self.at("{", k=1) and self.at("deg", k=2) and self.at("}", k=3) else 0

    def power(self):
        base = self.postfix_ops(self.atom())
        if self.at("^", "**") and not self.degree_follows():
            self.next()
            base = self.postfix_ops(_pow(base, self.nested(self.unary)))
        return base

    def postfix_ops(self, a):
        while (tok := self.peek()) is not _END:
            k = self.degree_follows()
            if k or self.at("deg"):
                self.i += k or 1
                if self.trig:          # \sin 30^\circ: inside trig, degrees are pi/180 radians
                    a = _mul(a, _mul(sympy.pi, Rational(1, 180)))
            elif self.accept("!", "!!"):
                a = _factorial(a, double=tok[1] == "!!")
            elif self.at("%") or tok[0] == "word" and tok[1].lower() in _PERCENT_WORDS:
                self.next()
                a = _mul(a, Rational(1, 100))
            else:
                break
        return a

    def group_arg(self):
        """A LaTeX macro argument: {...} or a single token (first digit of a number)."""
        kind, val, _ = self.peek()
        _reject_if(kind is None, "missing argument")
        if self.accept("{"):
            v = self.nested(self.setexpr)
            self.expect("}")
            return v
        if kind == "num" and len(val) > 1:
            self.split_token("num", "num")
            return _number(self.next()[1])
        if kind == "word" and len(val) > 1:
            self.split_token("id", "id" if len(val) == 2 else "word")
        return self.nested(lambda: self.postfix_ops(self.atom()))

    def comma_list(self, close=None, units=False):
        """Comma-separated set expressions up to (not including) `close` (empty if it comes first)."""
        if close is not None and self.at(close):
            return []
        items = [self.setexpr()]
        while True:
            if units:
                self.skip_units()
            if not self.at(","):
                return items
            self.next()
            items.append(self.setexpr())
            _reject_if(len(items) > MAX_ITEMS, "too many items", _LimitError)

    def delimited(self, close):
        items = self.nested(self.comma_list, close)
        self.expect(close)
        return items

    def atom(self):
        kind, val, _ = self.next()
        if kind == "num":
            return self.number_atom(val)
        if kind == "id":
            return self.identifier(val)
        if kind == "const":
            consts = {"pi": sympy.pi, "oo": _OO, "empty": _SetV([]), "R": _REALS}
            _reject_if(val not in consts, "unsupported set")
            return consts[val]
        if kind == "word":
            lw = val.lower()
            if lw in _CONST_WORDS:
                return _CONST_WORDS[lw]
            if lw in _FUNC_NAMES:
                return self.function(lw)
            if lw in _SEP_WORDS or lw in _PERCENT_WORDS or len(val) > 3:
                raise _ParseError("word in expression")      # `xyz` is x*y*z; longer runs are words
            v = S.One
            for ch in val[:-1]:
                v = _mul(v, _E if ch == "e" else _I if ch == "i" else Symbol(ch))
            return _mul(v, self.identifier(val[-1]))
        if kind == "func":
            return self.function(val)
        if kind == "cmd" and val in ("frac", "binom"):
            return (_div if val == "frac" else _binom)(self.group_arg(), self.group_arg())
        if kind == "cmd" and val == "sqrt":
            if not self.accept("["):
                return _pow(self.group_arg(), S.Half)
            n = self.expr()
            self.expect("]")
            return _root(self.group_arg(), n)
        if kind == "begin":
            return self.nested(self.matrix, val)
        if kind == "op" and val in ("(", "["):      # grouping, tuple, or interval
            items = self.nested(self.comma_list, None, True)
            _reject_if(not self.at(")", "]"), "expected closing bracket")
            c = self.next()[1]
            if len(items) == 2 and (val, c) == ("(", ")"):
                return _Seq("tuple", items, pair=True)
            if len(items) == 2:
                piece = _piece(items[0], items[1], val == "(", c == ")")
                _reject_if(libmp.mpf_cmp(_real_key(piece[0]), _real_key(piece[1])) > 0, "an interval written backwards")
                return _SetV([piece])
            _reject_if((val, c) not in (("(", ")"), ("[", "]")), "mismatched brackets")
            return items[0] if len(items) == 1 else _Seq("tuple", items)
        if kind == "op" and val == "{":
            items = self.delimited("}")
            _reject_if(not items, "empty group")
            # a LaTeX group is invisible: `{1,3}` renders as the list 1, 3
            return items[0] if len(items) == 1 else _Seq("list", items)
        if kind == "op" and val == r"\{":
            if self.peek()[0] == "id" and self.at("|", ":", k=1):
                return self.nested(self.set_builder)
            items = self.delimited(r"\}")
            return _Seq("set", items) if items else _SetV([])
        if kind == "op" and val == "<<":
            return _Seq("tuple", self.delimited(">>"))
        if kind == "op" and val in ("|", "lfloor", "lceil"):
            self.abs_open += val == "|"
            v = self.nested(self.expr)
            self.expect({"|": "|", "lfloor": "rfloor", "lceil": "rceil"}[val])
            self.abs_open -= val == "|"
            return _fn(sympy.Abs, v) if val == "|" else _floor_ceil(v, val == "lfloor")
        raise _ParseError(f"unexpected token {val!r}")

    def set_builder(self):
        """\\{x | x > 2\\} or \\{x : 1 \\le x < 3\\}: a one-variable condition as a set."""
        self.i += 2
        cond = self.item()
        self.expect(r"\}")
        s = _rel_to_set(cond) if isinstance(cond, _Rel) else cond
        _reject_if(not isinstance(s, _SetV), "unsupported set-builder condition")
        return s

    def number_atom(self, val):
        """A number, with a repeating part (0.1\\overline{6}), a base (204_5) or a fraction part: the mixed
        numbers 2\\frac12 and 2\\frac{1}{2}."""
        v = _number(val)
        nkind, nval, nsp = self.peek()
        if (nkind, nval) == ("cmd", "overline") and not nsp and "." in val and "e" not in val.lower():
            self.next()
            rep = self.braced(self.repeating_digits)
            ip, frac = val.split(".")
            a = int((ip or "0") + frac + rep) - int((ip or "0") + frac)
            return _check_size(Rational(a, 10 ** len(frac) * (10 ** len(rep) - 1)))
        if val.isdigit() and self.accept("_"):
            bkind, base, _ = self.braced(self.next)
            _reject_if(bkind != "num" or not base.isdigit() or not 2 <= int(base) <= 36, "bad base")
            try:
                return Integer(int(val, int(base)))
            except ValueError:
                raise _ParseError("bad digits for base") from None
        ahead = self.t[self.i + 1:self.i + 7]      # mixed number 2\frac{1}{2}: single-number groups only
        braced = len(ahead) == 6 and [t[1] for t in ahead[::3]] == ["{", "{"] \
            and [t[1] for t in ahead[2::3]] == ["}", "}"] and all(t[0] == "num" and t[1].isdigit() for t in ahead[1::3])
        bare = ahead[:1] and ahead[0][0] == "num" and len(ahead[0][1]) == 2 and ahead[0][1].isdigit()  # 2\frac12
        if (nkind, nval) == ("cmd", "frac") and val.isdigit() and (braced or bare):
            self.next()
            return _add(v, _div(self.group_arg(), self.group_arg()))
        return v

    def repeating_digits(self) -> str:
        if not self.at("{", k=-1) and self.peek()[0] == "num" and len(self.peek()[1]) > 1:
            self.split_token("num", "num")       # \overline36: only the 3 repeats
        kind, val, _ = self.next()
        _reject_if(kind != "num" or not val.isdigit() or len(val) > 60, "bad repeating decimal")
        return val

    def identifier(self, name):
        if not self.at("_"):
            return _E if name == "e" else _I if name == "i" else Symbol(name)
        self.next()
        kind, val, _ = self.peek()
        if self.accept("{"):
            parts = []
            while not self.at("}"):
                t = self.next()
                if t[0] not in ("num", "id", "word") and not (t[0] == "op" and t[1] in "+-,") or len(parts) >= 8:
                    raise _ParseError("bad subscript")
                parts.append(t[1])
            self.next()
            return Symbol(f"{name}_{''.join(parts)}")
        _reject_if(kind not in ("num", "id", "word"), "bad subscript")
        if len(val) > 1 and kind in ("num", "word"):      # x_12 is x_1 * 2 in LaTeX
            self.split_token("num" if kind == "num" else "id", "id" if kind == "word" and len(val) == 2 else kind)
        return Symbol(f"{name}_{self.next()[1]}")

    def function(self, name):
        """A function application: sin^2 x, \\log_2 8, \\sin^{-1}(x) (inverse), \\sqrt(x), exp, abs."""
        if name == "sqrt":
            return _pow(self.function_arg() if self.at("(") else self.group_arg(), S.Half)
        fpow = base = None
        if self.accept("^", "**"):
            neg = self.accept("-")
            fpow = _neg(self.group_arg()) if neg else self.group_arg()
        if name == "log" and self.accept("_"):
            base = self.group_arg()
        self.trig += name in _INVERSE
        arg = self.nested(self.function_arg)
        self.trig -= name in _INVERSE
        if fpow is not None and fpow == -1 and name in _INVERSE:
            return _fn(getattr(sympy, "a" + name), arg)
        if name == "abs":
            v = _fn(sympy.Abs, arg)
        elif name == "exp":
            v = _pow(_E, arg)
        elif base is not None:
            _reject_if(base == 1 or base == 0, "bad log base")
            v = _div(_fn(sympy.log, arg), _fn(sympy.log, base))
        else:
            v = _fn(getattr(sympy, _FUNC_ALIASES.get(name, name)), arg)   # name is from _FUNC_NAMES
        return v if fpow is None else _pow(v, fpow)

    def function_arg(self):
        """`(...)` or `{...}` (a power after either is the value's: `\\log{\\left(8\\right)}^{4}` is (log 8)^4, as
        sympy writes it), or an unbracketed product of powers that stops at the next function name."""
        for open_, close in (("(", ")"), ("{", "}")):
            if self.accept(open_):
                v = self.expr()
                self.expect(close)
                return v
        arg = self.power()
        while (tok := self.peek()) is not _END and self.implicit_start(tok) and tok[0] != "func" \
                and not (tok[0] == "word" and tok[1].lower() in _FUNC_NAMES):
            arg = _mul(arg, self.power())
        return arg

    def matrix(self, env):
        rows, row = [], []
        while (tok := self.next())[0] != "end":
            if tok[:2] == ("op", "rowsep"):
                if row:
                    rows.append(tuple(row))
                row = []
            elif tok[:2] == ("op", "&"):
                _reject_if(not row, "empty cell")
            else:
                self.i -= 1
                v = self.expr()
                _arith(v, finite=False)
                row.append(v)
                _reject_if(len(row) > MAX_ITEMS or len(rows) > MAX_ITEMS, "matrix too large", _LimitError)
        _reject_if(tok[1] != env, "mismatched environment")
        if row:
            rows.append(tuple(row))
        _reject_if(not rows or len({len(r) for r in rows}) != 1, "ragged matrix")
        return _Seq("matrix", [_Seq("tuple", r) for r in rows])

# ====================================================================================== answers

def _piece(lo, hi, lopen, ropen):
    """One interval; endpoints must be real closed forms or +-infinity."""
    for v in (lo, hi):
        _arith(v, finite=False)
        _reject_if(v.free_symbols, "symbolic interval")
        _reject_if(v not in (_OO, _NOO) and _real_key(v) is None, "interval endpoint is not a real number")
    return (lo, hi, bool(lopen or lo in (_OO, _NOO)), bool(ropen or hi in (_OO, _NOO)))

def _as_set(v) -> _SetV:
    if isinstance(v, _SetV):
        return v
    if isinstance(v, _Seq) and v.pair:
        return _SetV([_piece(v.items[0], v.items[1], True, True)])
    if isinstance(v, _Seq) and v.kind in ("set", "pm", "list"):
        return _SetV([_piece(x, x, False, False) for x in v.items])
    if _is_expr(v):
        return _SetV([_piece(v, v, False, False)])
    raise _ParseError("not a set")

def _name_like(toks) -> tuple[bool, Symbol | None]:
    """Is the left side of `=` just a name (x, x_1, f(x), \\text{Area}, (x, y))? -> (bool, symbol)."""
    kinds, vals = [t[0] for t in toks], [t[1] for t in toks]
    if kinds == ["id"]:
        return True, Symbol(vals[0]) if vals[0] not in ("e", "i") else None
    if len(toks) >= 3 and kinds[0] == "id" and vals[1] == "_":
        sub = "".join(v for v in vals[2:] if v not in ("{", "}"))
        if all(k in ("num", "id", "word", "op") for k in kinds[2:]) and re.fullmatch(r"[\w+\-,]{1,8}", sub):
            return True, Symbol(f"{vals[0]}_{sub}")
    if toks and all(k in ("word", "text") for k in kinds):
        return True, None
    if len(toks) >= 3 and kinds[0] in ("id", "word") and vals[-1] == ")" and "(" in vals \
            and (kinds[0] == "id" or len(vals[0]) <= 3):
        head, arg = toks[1:vals.index("(")], toks[vals.index("(") + 1:-1]   # f(x), f^{-1}(x), f_2(x), g(-1)
        if all(t[0] in ("num", "id") or t[1] in ("^", "_", "{", "}", "-", "'") for t in head) \
                and all(t[0] in ("num", "id") or t[1] in (",", "-") for t in arg):  # (`x(x+1) = 6`: no name)
            return True, None
    if len(toks) >= 5 and vals[0] == "(" and vals[-1] == ")" \
            and all((t[0] == "id") if j % 2 == 0 else (t[1] == ",") for j, t in enumerate(toks[1:-1])):
        return True, None       # (x, y) = ...
    return False, None

def _wrap(v):
    """An item value with `a \\pm b` expanded to the unordered pair {a + b, a - b} (also inside sets
    and lists); a bare expression becomes a _Scalar."""
    if _is_expr(v):
        return _Scalar(v) if not v.has(_PM) else _Seq("pm", [_subs_pm(v, S.One), _subs_pm(v, S.NegativeOne)])
    if isinstance(v, _Seq) and any(_is_expr(x) and x.has(_PM) for x in v.items):
        _reject_if(v.kind not in ("set", "list", "pm"), "\\pm inside a tuple")
        out = []
        for x in v.items:
            e = _wrap(x)
            out.extend(e.items if _is_seq(e, "pm") else [e.e if isinstance(e, _Scalar) else e])
        return _Seq(v.kind, out)
    if isinstance(v, _SetV) and any(p[0].has(_PM) or p[1].has(_PM) for p in v.pieces):
        raise _ParseError("\\pm inside an interval")
    return v

def _value(e, toks):
    """_wrap(e), marked as its tokens write it: a rational `computed` unless they write a number
    (_plain_number), a polynomial `expanded` where they write its distinct monomials (_plain_polynomial)."""
    v = _wrap(e)
    if isinstance(v, _Scalar) and isinstance(v.e, Rational):
        v.computed = not _plain_number(toks, v.e)
    elif isinstance(v, _Scalar) and v.e.free_symbols:
        v.expanded = _plain_polynomial(toks) and _distinct_terms(v.e)
    return v

def _places(toks) -> int | None:
    """Decimal places of a plain number as written (`3.14`: 2; `-3`: 0), else None (`1e3`, `\\frac12`, ...)."""
    toks = [t for t in toks if not (t[0] == "op" and t[1] in "{}")]
    if len(toks) == 2 and toks[0][0] == "op" and toks[0][1] in "+-":
        toks = toks[1:]
    if len(toks) != 1 or toks[0][0] != "num" or "e" in toks[0][1].lower():
        return None
    return len(toks[0][1].partition(".")[2])

def _approximates(a, a_toks, b, b_toks, deadline: float) -> bool:
    """Does `a \\approx b` hold as written? Of the sides written as plain numbers, the one with fewer decimal
    places must be the other side rounded or cut to them (`\\pi \\approx 3.14`, `\\frac{2}{3} \\approx 0.66`,
    not `1 \\approx 2`); where neither is, the two must agree as a decimal and a non-terminating value do
    (REL_TOL). Sides in variables never hold."""
    if a.free_symbols or b.free_symbols:
        return False
    shown = [(n, c, v) for n, c, v in ((_places(a_toks), a, b), (_places(b_toks), b, a)) if n is not None]
    if not shown:
        return _eq_expr(a, b, _Ctx(True, "", "", deadline))
    n, c, v = min(shown, key=lambda t: t[0])
    c, v = _real(c), _real(v)
    if c is None or v is None:
        return False
    c, v, unit = c[0], v[0], libmp.from_rational(1, 10 ** n, _P2, _RND)
    if libmp.mpf_le(libmp.mpf_abs(libmp.mpf_sub(v, c, _P2, _RND)), libmp.mpf_shift(unit, -1)):
        return True  # rounded
    same_sign = c == libmp.fzero or libmp.mpf_sign(c) == libmp.mpf_sign(v)
    c, v = libmp.mpf_abs(c), libmp.mpf_abs(v)  # cut: c <= v < c + one unit in c's last place
    return same_sign and libmp.mpf_le(c, v) and libmp.mpf_lt(v, libmp.mpf_add(c, unit, _P2, _RND))

def _chained(v, earlier, spans, rounded: bool, deadline: float):
    """v, the last member of an `=` chain whose members before it are `earlier` (their tokens and v's in
    `spans`), where the chain holds: `27 + 82 = 109` is 109, `5 = 3` is not an answer (a parse error). Not
    checked where the chain states an approximation: `\\approx`, or a last member written as a decimal
    (`\\frac{1}{3} = 0.3333`)."""
    decimal = [any(k == "num" and "." in t for k, t, _ in toks) for toks in spans]
    if rounded or decimal[-1]:
        return v
    cx = _Ctx(any(decimal), "", "", deadline)
    for p in earlier:
        if _is_expr(p) and not p.has(_PM) and isinstance(v, _Scalar):
            _reject_if(not _eq_expr(p, v.e, cx), "an `=` chain whose members differ")
    return v

def _token_signature(toks) -> tuple[str, list[str]]:
    """The tokens as one character each (n a number, v a variable, f \\frac, o \\overline, d a degree mark,
    % percent, an operator as itself, ? anything else; braces dropped, but for a group where a term starts,
    written as the parentheses it is: `+ {10 - 3}x`), and the numbers in order."""
    sig, nums, groups = "", [], []
    for kind, val, _ in toks:
        if kind == "num" or kind == "text" and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", val):  # \textbf{76}
            sig, nums = sig + "n", nums + [val.strip()]
        elif kind == "cmd" and val in ("frac", "overline"):
            sig += val[0]
        elif kind == "op" and val == "{":  # (not an argument: of ^, _, \frac, ...)
            groups.append(sig[-1:] in ("", "+", "-", "(", "*", "/", "="))
            sig += "(" if groups[-1] else ""
        elif kind == "op" and val == "}":
            sig += ")" if groups and groups.pop() else ""
        elif kind == "op" and val == "deg" or kind == "word" and val.lower() in _DEGREE_WORDS:
            sig += "d"
        elif kind == "word" and val.lower() in _PERCENT_WORDS:
            sig += "%"
        elif kind == "id" and val not in ("e", "i"):
            sig += "v"
        else:
            sig += val if kind == "op" and len(val) == 1 else "?"
    # a lone number or variable in parentheses is one: (8)/7, (x)^2; (-5) is N, one negative number, so
    # that (-7)(-9) stays two numbers side by side, not a subtraction
    return re.sub(r"\(([nv])\)", r"\1", re.sub(r"\(-n\)", "N", sig)), nums

def _bare(sig: str, signs: bool = True) -> str:
    """A signature without parentheses around it all, and (signs) without a leading sign: -(7), (-7),
    (x^2 - 1)."""
    while re.match(r"[+-]|\(.*\)$" if signs else r"\(.*\)$", sig):
        sig = sig[1:] if sig[0] in "+-" else sig[1:-1]
    return sig

def _plain_number(toks, value) -> bool:
    """Do these tokens write a number as a number: an integer or a decimal (`-7`, `2.50`, `1e3`,
    `0.1\\overline{6}`, `50\\%`, `25 percent`, `-(7)`, `\\mathbf{76}`, `\\textbf{76}`, `30^\\circ`, `10^6`,
    `2.5 \\times 10^{-3}`), a fraction of two integers (`11/12`, `\\frac{5}{-6}`, `(-5)/6`, `\\frac12`; in
    lowest terms or not, even where its value is an integer, since no question here asks for lowest terms
    and the fraction family's models write `\\frac{6}{6}` for 1) or a mixed number (`2\\frac{1}{2}`), rather
    than a computation (`27 + 82`, `5/4 - 1/3`, `\\sqrt{4}`, `2^3`, `59 + 17 + 0x`)? And did the parser read
    them as that number (`value`, up to its sign): `5700\\frac7{10}` looks like a mixed number and is a
    product, 3990."""
    sig, nums = _token_signature(toks)
    percent = sig.endswith("%")
    sig = _bare(re.sub(r"(\^?d|%)$", "", sig.replace("N", "-n")))  # degrees, percent
    whole = lambda x: re.fullmatch(r"\d+", x) is not None
    spelled = None  # the number the tokens spell
    if sig == "n":  # an integer or a decimal
        spelled = Fraction(nums[0])
    elif sig == "non" and "." in nums[0]:  # a repeating decimal (its value: the parser's)
        return True
    elif re.fullmatch(r"(n\*)?n\^-?n", sig) and nums[-2] == "10" and whole(nums[-1]):  # powers of ten
        exponent = int(nums[-1]) * (-1 if "-" in sig else 1)
        spelled = Fraction(nums[0] if len(nums) == 3 else 1) * Fraction(10) ** exponent
    elif re.fullmatch(r"-?n[/:]-?n|f-?n-?n|nfnn", sig) and all(map(whole, nums)):
        *w, p, q = map(int, nums)
        if q > 0 and (not w or p < q):  # (mixed: a proper fraction)
            spelled = sum(w) + Fraction(p, q)
    return spelled is not None and abs(Fraction(int(value.p), int(value.q))) == spelled / (100 if percent else 1)

_MONOMIAL = (r"(?:(?:[nN]|f-?n-?n)(?:\*?v(?:\^n)?)*|v(?:\^n)?(?:\*?v(?:\^n)?)*"
             r"|f-?n?(?:\*?v(?:\^n)?)+n)")  # (the last: \frac{3x^2}{2})
_POLYNOMIAL_RE = re.compile(rf"[+-]*{_MONOMIAL}(?:[+-]+{_MONOMIAL})*")  # (x^2 + -7x: signs in a row)

def _plain_polynomial(toks) -> bool:
    """Do these tokens write a sum of monomials, each a number (or a \\frac of two) times powers of single-
    letter variables (`8x^2 - 16x - 64`, `8 \\cdot x^2 - 16x - 64`, `\\frac{1}{2}x + \\frac{x}{2}`), with no product of
    sums, no parenthesis and no arithmetic inside a coefficient (`(4x+8)(2x-8)`, `(4 \\cdot 2)x^2`,
    `(4x)(2x) + (4x)(-8) + ...`, `-(-(x + 6 + x + 6))`)? (_distinct_terms then asks for each monomial once.)"""
    # (x^2 - 1) is one, and a sign before parentheses is not a monomial's: -(-(x + 6 + x + 6))
    return _POLYNOMIAL_RE.fullmatch(_bare(_token_signature(toks)[0], signs=False)) is not None

def _distinct_terms(e) -> bool:
    """Are the terms of a sum of monomials nonzero and of distinct monomials (`x^2 + 2x + x - 6` and
    `8x^2 - 16x - 64 + 0x` are not)?"""
    terms, seen = [e], set()
    while any(t.is_Add for t in terms):
        terms = [u for t in terms for u in (t.args if t.is_Add else (t,))]
    for t in terms:
        powers, stack = {}, [t]
        while stack:
            f = stack.pop()
            if f.is_Mul:
                stack.extend(f.args)
            elif f.is_Number:
                if f == 0:
                    return False
            elif f.is_Pow and f.exp.is_Integer:
                if f.exp != 0:  # (x^0 is a constant)
                    powers[f.base] = powers.get(f.base, 0) + int(f.exp)
            else:
                powers[f] = powers.get(f, 0) + 1
        key = frozenset(powers.items())
        if key in seen:
            return False
        seen.add(key)
    return True

def _build_item(parts, ops, spans, exact: bool, deadline: float):
    """One answer item from `parts[0] ops[0] parts[1] ...`, each part's tokens in `spans`; `exact`: see
    _Parser; deadline: the parse's, for its checks of chains and approximations."""
    if not ops:
        return _value(parts[0], spans[0])
    named, sym = _name_like(spans[0])
    rounded = False  # a chain that states an approximation: its members need not be equal
    if "approx" in ops:
        for j, op in enumerate(ops):  # (`1 \approx 2` is no answer: else it would pay for either guess)
            if op == "approx" and (j >= 1 or not named):
                _reject_if(not _approximates(parts[j], spans[j], parts[j + 1], spans[j + 1], deadline),
                           "an approximation that does not hold")
        # `x = 1/3 \approx 0.33`: the exact value before the approximation is the answer (`x \approx 3.14`:
        # the approximation is all there is); `\frac{11}{12} \approx 0.917` is read both ways (`exact`)
        k = ops.index("approx")
        if k >= 1 or not named and exact:
            parts, ops, spans = parts[:k + 1], ops[:k], spans[:k + 1]
            if not ops:
                return _value(parts[0], spans[0])
        rounded = "approx" in ops
        ops = ["=" if op == "approx" else op for op in ops]
    if all(op in ("=", "in") for op in ops):
        if named:
            v = _value(parts[-1], spans[-1])
            if isinstance(v, _Scalar) and sym is not None and len(parts) == 2:
                v.origin = sym
            return _chained(v, parts[1:-1], spans[1:], rounded or "in" in ops, deadline)
        _reject_if("in" in ops, "membership with a non-name")
        if len(parts) > 2 or all(_is_expr(p) and not p.free_symbols for p in parts):
            return _chained(_value(parts[-1], spans[-1]), parts[:-1], spans, rounded, deadline)
    elif any(op in ("=", "in") for op in ops):
        raise _ParseError("mixed relations")
    for p in parts:
        _arith(p)
        _reject_if(p.has(_PM), "\\pm in a relation")
    if len(ops) == 1:  # (`(x-2)(x+5) = x^2 + 3x - 10` too: an identity, which _equal reads as its right side)
        return _Rel(ops[0], parts[0], parts[1], _value(parts[1], spans[1]) if ops[0] == "=" else None)
    if len(ops) == 2:
        lo, mid, hi = parts
        o1, o2 = ops
        _reject_if(o1[0] != o2[0] or "!" in o1 + o2, "inconsistent chain")
        if o1[0] == ">":
            lo, hi, o1, o2 = hi, lo, o2, o1
        if isinstance(mid, Symbol) and not lo.free_symbols and not hi.free_symbols:
            return _SetV([_piece(lo, hi, o1 in ("<", ">"), o2 in ("<", ">"))])
    raise _ParseError("unsupported relation chain")

def _assemble(items):
    """The answer value from its items: one item, a dict for `x = 1, y = 2`, else a list."""
    if len(items) == 1:
        return items[0]
    origins = [it.origin if isinstance(it, _Scalar) else None for it in items]
    if None not in origins and len(set(origins)) == len(origins):
        return {o: it.e for o, it in zip(origins, items)}
    flat = []
    for it in items:
        flat.extend(it.items if _is_seq(it, "pm") else [it.e if isinstance(it, _Scalar) else it])
    return _Seq("list", flat)

_REAL_WORDS = {"allrealnumbers", "allreals", "realnumbers", "allrealx", "allrealvaluesofx"}
_EMPTY_WORDS = {"nosolution", "nosolutions", "norealsolution", "norealsolutions", "emptyset", "thereisnosolution"}

def _words_only(toks) -> bool:
    """Is the answer plain text (words, \\text{}, multiple choice `(B)`) rather than math?"""
    if len(toks) == 3 and toks[0][1] == "(" and toks[2][1] == ")":
        toks = toks[1:2]
    if not toks or not all(t[0] in ("word", "text") or t[0] == "op" and t[1] in ",-" for t in toks):
        return False
    return any(t[0] == "text" for t in toks) or any(
        len(w) >= 3 and w not in _FUNC_NAMES and w not in _CONST_WORDS
        for w in (t[1].lower() for t in toks if t[0] == "word"))

def _parse_one(s: str, thousands: bool, exact: bool = True):
    """-> ((value, inexact), saw_thousands)."""
    toks, saw_thou, has_dec = _tokenize(s, thousands)
    _reject_if(not toks, "empty answer")
    if not _words_only(toks):
        return (_assemble(_Parser(toks, exact).answer()), has_dec), saw_thou
    key = _text_key(s)
    _reject_if(not _TEXTY_RE.fullmatch(key), "not a plain text answer")
    return (_REALS if key in _REAL_WORDS else _SetV([]) if key in _EMPTY_WORDS else key, False), saw_thou

@functools.lru_cache(maxsize=8192)
def _parse_cached(s: str):
    """-> ('ok', tuple of (value, inexact) alternatives) | ('parse', None) | ('limit', None)."""
    try:
        t = _prenormalize(_unwrap_boxes(s, text=True))
        if not t:
            return ("parse", None)
        first, ambiguous = _parse_one(t, True)
        alts = [first]
        # `1,234` may also be the list (1, 234); not when a group starts with 0 (`10,020`)
        if ambiguous and not re.search(r",0", t):
            try:
                alts.append(_parse_one(t, False)[0])
            except (_ParseError, _LimitError):
                pass
        if "\\approx" in t:  # `\frac{11}{12} \approx 0.92`: the exact value, or the approximation
            try:
                alts.append(_parse_one(t, True, exact=False)[0])
            except (_ParseError, _LimitError):
                pass
        return ("ok", tuple(alts))
    except (_LimitError, RecursionError, MemoryError):
        return ("limit", None)
    except Exception:  # a parse error, or any failure on odd input: not an answer (never crash a run)
        return ("parse", None)

# ====================================================================================== comparison

class _Ctx:
    """One comparison: inexact (a decimal literal is involved), the raw strings, the deadline."""
    def __init__(self, inexact, pred_raw, gold_raw, deadline):
        self.inexact, self.pred_raw, self.gold_raw, self.deadline = inexact, pred_raw, gold_raw, deadline

    def tick(self):
        if time.monotonic() > self.deadline:
            raise _Timeout()

def _points(syms, n_max=12):
    """Deterministic pseudo-random real points with |coordinate| in [0.3, 2.5]. The first four cover
    all sign patterns of the first two variables (so |x| and x, sqrt(x^2) and x differ)."""
    rng = random.Random(20240607)
    for j in range(n_max):
        pt = {}
        for i, s in enumerate(syms):
            q = rng.choice((7, 11, 13))
            k = rng.randint(3 * q // 10 + 1, 5 * q // 2)
            neg = (j >> i) & 1 if j < 4 and i < 2 else rng.random() < 0.4
            pt[s] = (libmp.from_rational(-k if neg else k, q, _P2 + 64, _RND), libmp.fzero)
        yield pt

def _sorted_syms(*exprs):
    return sorted(set().union(*(e.free_symbols for e in exprs)), key=lambda s: s.name)

def _eq_expr(a, b, cx) -> bool:
    """Scalar equality: exact for rationals (a decimal against a non-terminating rational within
    REL_TOL), numeric (see _agree) otherwise; expressions in variables must agree at several points."""
    cx.tick()
    if a.has(S.NaN, S.ComplexInfinity) or b.has(S.NaN, S.ComplexInfinity):
        return False
    if a == b:
        return True
    if a.has(_OO, _NOO) or b.has(_OO, _NOO):
        return False
    if isinstance(a, Rational) and isinstance(b, Rational):
        fa, fb = Fraction(int(a.p), int(a.q)), Fraction(int(b.p), int(b.q))
        terminating = _terminates(fa) and _terminates(fb)
        return cx.inexact and not terminating and abs(fa - fb) <= REL_TOL * max(abs(fa), abs(fb))
    syms = _sorted_syms(a, b)
    if not syms:
        return _agree(a, b, None, cx.inexact, cx.deadline) is True
    good = 0
    for pt in _points(syms):
        cx.tick()
        v = _agree(a, b, pt, cx.inexact, cx.deadline)
        if v is False:
            return False
        good += v is True      # None: pole, removable singularity or out of range: try another point
        if good >= _N_POINTS:
            return True
    return good >= 2

def _terminates(q: Fraction) -> bool:
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1

def _ratio_test(f1, f2, positive: bool, cx) -> bool:
    """Is f2 = k * f1 for one constant k != 0 (real and > 0 if positive)? Decided numerically."""
    if f1 == 0 or f2 == 0:
        return f1 == 0 and f2 == 0
    syms = _sorted_syms(f1, f2)
    ratios = []
    for pt in (_points(syms) if syms else [None]):
        cx.tick()
        ev = _Eval(_P1, pt)
        try:
            z1, z2 = ev(f1), ev(f2)
            if _zbits(z1) <= ev.noise_bits() or _zbits(z2) <= ev.noise_bits():
                continue
            ratios.append(libmp.mpc_div(z2, z1, _P1, _RND))
        except _EVAL_ERRORS:
            continue
        if len(ratios) >= _N_POINTS:
            break
    if len(ratios) < (3 if syms else 1):
        return False
    r0 = ratios[0]
    if positive and (_bits(r0[1]) > _bits(r0[0]) - 90 or libmp.mpf_cmp(r0[0], libmp.fzero) <= 0):
        return False
    tol = libmp.mpf_mul(_LOOSE if cx.inexact else _TIGHT, _mag(r0), _P1)
    return all(libmp.mpf_le(_mag(libmp.mpc_sub(r, r0, _P1, _RND)), tol) for r in ratios[1:])

def _eq_rel(r1: _Rel, r2: _Rel, cx) -> bool:
    """Same relation: same operator and proportional side differences."""
    return r1.op == r2.op and _ratio_test(_sub(r1.rhs, r1.lhs), _sub(r2.rhs, r2.lhs), r1.op in ("<", "<="), cx)

def _rel_to_set(r: _Rel) -> _SetV | None:
    """`x < 3` -> (-oo, 3) etc.; None unless a bound on a single variable."""
    if isinstance(r.lhs, Symbol) and not r.rhs.free_symbols:
        sym_left, c = True, r.rhs
    elif isinstance(r.rhs, Symbol) and not r.lhs.free_symbols:
        sym_left, c = False, r.lhs
    else:
        return None
    try:
        if r.op == "!=":
            return _SetV([_piece(_NOO, c, True, True), _piece(c, _OO, True, True)])
        if r.op == "=":
            return _SetV([_piece(c, c, False, False)])
        strict = r.op == "<"
        return _SetV([_piece(_NOO, c, True, strict) if sym_left else _piece(c, _OO, strict, True)])
    except _ParseError:
        return None

def _canonical(s: _SetV):
    """Sorted, merged pieces [(lo, hi, lo_open, hi_open)] of a union (empty pieces dropped)."""
    items = []
    for lo, hi, lopen, ropen in s.pieces:
        klo, khi = _real_key(lo), _real_key(hi)
        _reject_if(klo is None or khi is None, "undecidable endpoint")
        c = libmp.mpf_cmp(klo, khi)
        if c < 0 or c == 0 and not (lopen or ropen):
            items.append([klo, khi, lo, hi, lopen, ropen])
    items.sort(key=functools.cmp_to_key(lambda p, q: libmp.mpf_cmp(p[0], q[0]) or (p[4] - q[4])))
    merged = []
    for p in items:
        q = merged[-1] if merged else None
        c = libmp.mpf_cmp(p[0], q[1]) if q else 1          # new lo vs current hi
        if c < 0 or c == 0 and not (q[5] and p[4]):
            if libmp.mpf_cmp(p[1], q[1]) > 0 or libmp.mpf_cmp(p[1], q[1]) == 0 and not p[5]:
                q[1], q[3], q[5] = p[1], p[3], p[5]
            if libmp.mpf_cmp(p[0], q[0]) == 0 and not p[4]:
                q[4] = False
        else:
            merged.append(list(p))
    return [(p[2], p[3], p[4], p[5]) for p in merged]

def _eq_sets(s1: _SetV, s2, cx) -> bool:
    """Equal unions of intervals (s2 may be anything _as_set accepts; not a set -> False)."""
    try:
        c1, c2 = _canonical(s1), _canonical(_as_set(s2))
    except _ParseError:
        return False
    return len(c1) == len(c2) and all(
        a[2:] == b[2:] and _eq_expr(a[0], b[0], cx) and _eq_expr(a[1], b[1], cx) for a, b in zip(c1, c2))

def _ordered_eq(xs, ys, cx) -> bool:
    return len(xs) == len(ys) and all(_equal(x, y, cx) for x, y in zip(xs, ys))

def _signature(x, pt):
    """Complex float value of a scalar item at a shared point (None when not available): a cheap
    filter so that long lists are not matched pairwise with the full test."""
    if not _is_expr(x):
        return None
    try:
        z = _Eval(_P1, pt)(x)
        sig = complex(libmp.to_float(z[0]), libmp.to_float(z[1]))
    except (*_EVAL_ERRORS, _Timeout):
        return None
    return None if sig != sig or abs(sig) == float("inf") else sig

def _unordered_eq(xs, ys, cx) -> bool:
    """Set semantics: every element of each side equals some element of the other."""
    pt = next(_points(_sorted_syms(*(x for x in (*xs, *ys) if _is_expr(x)))))
    sx, sy = [_signature(x, pt) for x in xs], [_signature(y, pt) for y in ys]
    for src, ssrc, dst, sdst in ((xs, sx, ys, sy), (ys, sy, xs, sx)):
        for x, s in zip(src, ssrc):
            if any(x == y for y in dst):          # cheap structural match first
                continue
            if not any(_equal(x, y, cx) for y, t in zip(dst, sdst)
                       if s is None or t is None or abs(s - t) <= 1e-4 * max(abs(s), abs(t)) + 1e-300):
                return False
    return True

def _is_seq(v, *kinds) -> bool:
    return isinstance(v, _Seq) and v.kind in kinds

def _not_as_asked(pred, gold, inexact: bool) -> bool:
    """Is the prediction not the result the gold is, though equal to it: where the gold is a number written
    as one, anything but a number written as one (`27 + 82`, `59 + 17 + 0x`, `|59 + 17|`, `\\{27 + 82\\}`
    or `27 + 82 \\pm 0` for `109`; `5/4 - 1/3` for `\\frac{11}{12}`); where the gold is an expanded
    polynomial, anything but one (`(x-3)(x+2)`, `(x-3)(x+2) \\cdot \\frac{x}{x}`, its FOIL terms, or
    `x^2 + 2x + x - 6` for `x^2 - x - 6`); where the gold is a polynomial not written expanded, anything
    but a polynomial not written expanded. A question that asks for a computation ("Compute 27 + 82.",
    "Expand (x-3)(x+2).") is answered by its result, one that asks for a form ("Factor x^2 - x - 6.") by
    that form: a response that copies the question into its box earns nothing. The reward's rule
    (reward_with_reason), not equivalence's: `is_equivalent` compares values only. A gold written as a
    computation (`2^{10}`) takes its value written any way, and a decimal one (`0.707107`, `inexact`) a
    closed form it rounds (`\\frac{\\sqrt{2}}{2}`). (A fraction counts as a number, so a linear equation's
    last division can be left undone: `\\frac{45}{-5}` for -9.)"""
    if not isinstance(gold, _Scalar) or isinstance(pred, str):  # (a text answer: compared as text)
        return False
    if isinstance(pred, _Rel) and pred.value is not None:  # `(x-2)(x+5) = x^2 + 3x - 10`: its right side's form
        pred = pred.value
    y = gold.e
    if isinstance(y, Rational):
        if gold.computed:
            return False
        if not isinstance(pred, _Scalar) or pred.e.free_symbols:
            return True
        return pred.computed if isinstance(pred.e, Rational) else not inexact
    if y.free_symbols and y.is_polynomial():
        x = pred.e if isinstance(pred, _Scalar) else None
        return x is None or not (x.free_symbols and x.is_polynomial()) or pred.expanded != gold.expanded
    return False

def _equal(a, b, cx) -> bool:
    """Are two parsed answers equal? Dispatches on the pair of value types (in either order)."""
    cx.tick()
    a_origin = a.origin if isinstance(a, _Scalar) else None
    b_origin = b.origin if isinstance(b, _Scalar) else None
    a = a.e if isinstance(a, _Scalar) else a
    b = b.e if isinstance(b, _Scalar) else b
    if isinstance(a, str) or isinstance(b, str):
        return _text_match(cx.pred_raw, cx.gold_raw)
    if _is_expr(a) and _is_expr(b):
        if a_origin is not None and b_origin is not None and a_origin != b_origin \
                and (a.free_symbols or b.free_symbols):
            # `y = x + 1` vs `x = y - 1`: the same relation solved for different names
            return _eq_rel(_Rel("=", a_origin, a), _Rel("=", b_origin, b), cx)
        return _eq_expr(a, b, cx)
    if isinstance(a, _Rel) and isinstance(b, _Rel):
        return _eq_rel(a, b, cx)
    if isinstance(a, _Seq) and isinstance(b, _Seq):
        return _eq_seq(a, b, cx)
    if isinstance(a, _SetV) and isinstance(b, _SetV):
        return _eq_sets(a, b, cx)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_eq_expr(a[k], b[k], cx) for k in a)
    for x, y, y_origin in ((a, b, b_origin), (b, a, a_origin)):      # mixed types: x is the more specific
        if isinstance(x, _Rel) and _is_expr(y):
            if x.op == "=" and _eq_expr(x.lhs, x.rhs, cx):  # an identity worked to its right side
                return _eq_expr(x.rhs, y, cx)
            return y_origin is not None and _eq_rel(x, _Rel("=", y_origin, y), cx)
        if isinstance(x, _Rel) and (isinstance(y, _SetV) or isinstance(y, _Seq) and y.pair):
            s = _rel_to_set(x)
            return s is not None and _eq_sets(s, y, cx)
        if _is_seq(x, "set", "list", "pm") and _is_expr(y):
            return all(_equal(el, y, cx) for el in x.items)
        if isinstance(x, _SetV) and _is_expr(y):
            return bool(x.pieces) and all(p[2] is False and p[3] is False and _eq_expr(p[0], y, cx)
                                          and _eq_expr(p[1], y, cx) for p in x.pieces)
        if isinstance(x, _SetV) and _is_seq(y, "list") and all(isinstance(r, _Rel) for r in y.items):
            sets = [_rel_to_set(r) for r in y.items]        # `x < -1 or x > 1`
            return None not in sets and _eq_sets(x, _SetV([p for s in sets for p in s.pieces]), cx)
        if isinstance(x, _SetV) and isinstance(y, _Seq):
            return (y.pair or y.kind in ("set", "list", "pm")) and _eq_sets(x, y, cx)
        if isinstance(x, dict) and _is_seq(y, "tuple", "list"):  # `y = 1, x = 2` is (2, 1): names in order
            return _ordered_eq([x[k] for k in sorted(x, key=lambda k: k.name)], list(y.items), cx)
    return False

def _eq_seq(a: _Seq, b: _Seq, cx) -> bool:
    ka, kb = a.kind, b.kind
    if ka == kb == "matrix":
        return len(a.items) == len(b.items) and all(
            _ordered_eq(r1.items, r2.items, cx) for r1, r2 in zip(a.items, b.items))
    if "matrix" in (ka, kb):              # a row or column vector against a tuple
        rows, o = (a.items, b) if ka == "matrix" else (b.items, a)
        vec = rows[0].items if len(rows) == 1 else [r.items[0] for r in rows] \
            if all(len(r.items) == 1 for r in rows) else None
        return o.kind in ("tuple", "list") and vec is not None and _ordered_eq(list(vec), list(o.items), cx)
    if "tuple" in (ka, kb):
        return not ({ka, kb} & {"set", "pm"}) and _ordered_eq(a.items, b.items, cx)
    return _unordered_eq(a.items, b.items, cx)

# ====================================================================================== public API

def _judge(pred: str, gold: str, as_asked: bool = False) -> str:
    """RIGHT, WRONG or UNPARSABLE; `as_asked`: also in the gold's form (_not_as_asked)."""
    pp, gp = _parse_cached(pred), _parse_cached(gold)
    if pp[0] == "limit":
        return UNPARSABLE
    if pp[0] == "parse" or gp[0] != "ok":
        if gp[0] != "limit" and pp[0] != "limit" and _text_match(pred, gold):
            return RIGHT
        return UNPARSABLE if pp[0] != "ok" else WRONG
    deadline = time.monotonic() + TIME_BUDGET_S
    try:
        for pv, p_inexact in pp[1]:
            for gv, g_inexact in gp[1]:
                if as_asked and _not_as_asked(pv, gv, g_inexact):
                    continue
                if _equal(pv, gv, _Ctx(p_inexact or g_inexact, pred, gold, deadline)):
                    return RIGHT
    except Exception:   # timeout, recursion, or a sympy failure on odd input: "not shown equal"
        pass
    return WRONG

def _clean_arg(x, unbox=False) -> str:
    """A str argument (None -> ""); with unbox, the content of its box if it has one."""
    x = "" if x is None else x if isinstance(x, str) else str(x)
    return (extract_answer(x) or x) if unbox and ("\\boxed" in x or "\\fbox" in x) else x

def is_equivalent(pred: str, gold: str) -> bool:
    """True iff the answer strings denote the same mathematical object (conventions above)."""
    pred, gold = _clean_arg(pred, unbox=True), _clean_arg(gold, unbox=True)
    if not pred.strip() or not gold.strip() or max(len(pred), len(gold)) > 4 * MAX_ANSWER_CHARS:
        return False
    return _judge(pred, gold) == RIGHT


def answer_value(answer: str):
    """The sympy value of an answer that is one expression (`8/7`, `x = 5` -> 5, `(x-3)(x+2)`, unexpanded),
    else None: a list, a set, a relation, text, or what does not parse. Safe on any text, as is_equivalent."""
    answer = _clean_arg(answer, unbox=True)
    if not answer.strip() or len(answer) > 4 * MAX_ANSWER_CHARS:
        return None
    status, alts = _parse_cached(answer)
    v = alts[0][0] if status == "ok" else None
    return v.e if isinstance(v, _Scalar) and _is_expr(v.e) else None


def response_answer(completion: str, finished: bool = True) -> str | None:
    """The answer a response gives: extract_answer's, or None for one cut off at the length limit (not
    finished: not a solution, whatever it boxed before the cut; reward_with_reason grades it TRUNCATED)."""
    return extract_answer(completion) if finished else None


def reward_with_reason(completion: str, gold: str, finished: bool = True) -> tuple[float, str]:
    """(1.0, RIGHT) if the completion's extracted answer equals gold, else (0.0, reason). `finished`: the
    response ended with EOS; one cut off at the length limit gets (0.0, TRUNCATED) even if it boxed the answer."""
    if not finished:
        return 0.0, TRUNCATED
    gold = _clean_arg(gold, unbox=True)
    ans = extract_answer(_clean_arg(completion))
    if ans is None:
        return 0.0, NO_ANSWER
    if len(ans) > 4 * MAX_ANSWER_CHARS:
        return 0.0, UNPARSABLE
    if not gold.strip():
        return 0.0, WRONG
    r = _judge(ans, gold, as_asked=True)
    return (1.0 if r == RIGHT else 0.0), r

def reward(completion: str, gold: str, finished: bool = True) -> float:
    """1.0 if the (finished) completion's final answer is equivalent to gold and written as the gold is (a
    result where the gold is one: `\\boxed{27 + 82}` earns 0 against 109; see reward_with_reason), else 0.0."""
    return reward_with_reason(completion, gold, finished)[0]
