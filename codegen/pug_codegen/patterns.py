r"""Catalog and contract patterns, matched in Python as the Pug server matches them.

The server's rules are protovalidate's `string.pattern`: RE2 syntax, searched anywhere in
the value (a partial match), no flags. Python's `re` reads most of that syntax alike but
not all, and the difference lets through values the server rejects (and one invalid
event rejects its whole batch). `python_pattern` translates:

- `$` is the end of the text in RE2; in Python it also matches before a final newline
  (`re.search("^[A-Z]{3}$", "USD\n")` matches). `$` and RE2's `\z` become `\Z`.
- `\d`, `\w`, `\s` and `\b` are ASCII in RE2 and Unicode in Python: they become the
  ASCII sets, and `(?a:\b)`.
- `{,n}` is a literal in RE2 and a repetition in Python: a `{` that does not open an RE2
  repetition becomes `\{`.

What only one engine has, or what they read differently otherwise, is refused with
`UnsupportedPattern` (a `ValueError`): the `m`, `U` and `x` flags, lookaround,
backreferences and other Python-only groups, possessive repetitions, `\Z`, `\p{..}`,
`\Q..\E`, `\C`, digit escapes, `[[:alpha:]]`, and `\D`, `\W`, `\S` inside a class.

The translated pattern goes into `msgspec.Meta(pattern=...)` (msgspec matches with
Python's `re.search`) and `re.compile`: the generator writes it into every generated
event module and, for the wire contract's patterns, into `pug.rules` (which the runtime
and the fake server read), so RE2's rules become Python's in this one place.

Standard library only.
"""

from __future__ import annotations

import re

__all__ = ["UnsupportedPattern", "compile_pattern", "python_pattern"]


class UnsupportedPattern(ValueError):
    """A pattern RE2 and Python's `re` would not match alike (or RE2 would not accept)."""


# RE2's Perl classes are ASCII-only (RE2 syntax: `\s` is `[\t\n\f\r ]`, no `\v`).
_PERL = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\f\\r "}
# Escapes that mean the same character, or anchor, in both engines.
_SAME_ESCAPES = frozenset("aftnrvxA")
_REPEAT = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")


def _unsupported(pattern: str, at: int, what: str) -> UnsupportedPattern:
    return UnsupportedPattern(
        f"pattern {pattern!r} at {at}: {what} (RE2 and Python's re would not match alike)"
    )


def python_pattern(pattern: str) -> str:
    """The Python `re` pattern that, used with `re.search`, matches exactly the strings
    RE2 finds `pattern` in (see the module's docstring). Raises `UnsupportedPattern`
    (a `ValueError`) for what it cannot translate; `re.compile` reports other errors."""
    out: list[str] = []
    n = len(pattern)
    i = 0
    in_class = False
    class_body = 0  # where the current class's members begin (a `]` there is a literal)
    repeated = False  # the last thing written is a repetition (`*`, `+`, `?`, `{n,m}`)
    while i < n:
        c = pattern[i]
        if not in_class and c == "+" and repeated:
            raise _unsupported(pattern, i, "a possessive repetition")
        repeated = not in_class and c in "*+?" and i > 0 and pattern[i - 1] != "("
        if c == "\\":
            if i + 1 == n:
                raise _unsupported(pattern, i, "a trailing backslash")
            e = pattern[i + 1]
            if e in _PERL:
                out.append(_PERL[e] if in_class else f"[{_PERL[e]}]")
            elif e.lower() in _PERL:
                if in_class:
                    raise _unsupported(pattern, i, f"\\{e} inside a character class")
                out.append(f"[^{_PERL[e.lower()]}]")
            elif e in "bB" and not in_class:
                out.append(f"(?a:\\{e})")
            elif e == "z" and not in_class:
                out.append("\\Z")
            elif e in _SAME_ESCAPES and not (e == "A" and in_class):
                out.append("\\" + e)
            elif e.isascii() and e.isalnum():
                raise _unsupported(pattern, i, f"the escape \\{e}")
            else:  # an escaped punctuation character: itself in both
                out.append("\\" + e)
            i += 2
            continue
        if in_class:
            if c == "]" and i > class_body:
                in_class = False
                out.append("]")
            elif c == "]":  # first in the class: a literal in both engines
                out.append("\\]")
            elif c == "[":
                if pattern.startswith("[:", i):
                    raise _unsupported(pattern, i, "a POSIX class [:name:]")
                out.append("\\[")  # a literal; escaped, Python would warn of a nested set
            elif c in "&~|":
                out.append("\\" + c)  # literals; doubled, Python would warn of set operations
            else:
                out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append("[")
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            class_body = i
            continue
        if c == "$":
            out.append("\\Z")
        elif c == "{":
            repeat = _REPEAT.match(pattern, i)
            if repeat is None:
                out.append("\\{")
            else:
                out.append(repeat.group())
                i = repeat.end()
                repeated = True
                continue
        elif c == "(" and pattern.startswith("(?", i):
            flags = _FLAGS.match(pattern, i)
            if pattern.startswith("(?P<", i):
                out.append("(?P<")
                i += 4
                continue
            if flags is None or (flags.group(1) + (flags.group(2) or "")).strip("is"):
                if flags is not None and "m" in flags.group(0):
                    raise _unsupported(pattern, i, "the m flag (`$` would end every line)")
                raise _unsupported(pattern, i, f"the group {pattern[i : i + 4]!r}")
            out.append(flags.group())
            i = flags.end()
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern` (RE2 syntax) compiled for Python: `.search(value)` is RE2's partial
    match. Raises `UnsupportedPattern` or `re.error` for a pattern it cannot take."""
    return re.compile(python_pattern(pattern))
