"""Every error code the node can send, found by reading its source (no list to keep in step by hand)."""

# A code reaches a client as the `code` of an `<base>/error` answer, of a request's reply, or of an HTTP
# error body. It is always the first argument of CommandError or LogoError, the third of HttpError
# (or its `code=`), or the third of a runner's `report(...)`. Where the argument is a name, the string
# constants assigned to that name in the same function count (`code = "a" if ... else "b"`).

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Constructor or function name -> the position of the code among its arguments.
POSITIONS = {"CommandError": 0, "LogoError": 0, "HttpError": 2, "report": 2}
# HttpError's default code, used when the call gives none.
DEFAULTS = {"HttpError": "bad_request"}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _strings(expr: ast.AST) -> Iterator[str]:
    for sub in ast.walk(expr):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            yield sub.value


def _assigned(scope: ast.AST, name: str) -> Iterator[str]:
    for sub in ast.walk(scope):
        if isinstance(sub, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in sub.targets):
            yield from _strings(sub.value)


def _code_argument(call: ast.Call, positions: dict[str, int]) -> ast.expr | None:
    name = _name(call.func)
    for keyword in call.keywords:
        if keyword.arg == "code":
            return keyword.value
    position = positions[name]
    return call.args[position] if len(call.args) > position else None


def codes_in(path: Path, positions: dict[str, int] | None = None) -> set[str]:
    positions = {**POSITIONS, **(positions or {})}
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    scopes: list[ast.AST] = [
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    for scope in [tree, *scopes]:
        for call in ast.walk(scope):
            if not isinstance(call, ast.Call) or _name(call.func) not in positions:
                continue
            arg = _code_argument(call, positions)
            if arg is None:
                if _name(call.func) in DEFAULTS:
                    found.add(DEFAULTS[_name(call.func)])
            elif isinstance(arg, ast.Name):
                found |= set(_assigned(scope, arg.id))
            else:
                found |= set(_strings(arg))
    # Attribute chains (exc.code, error.code) pass a code on: found where it was raised.
    return {code for code in found if code.isidentifier() and code.islower()}


# The embedded broker's limits report (code, client id, topic, message): broker/limits.py.
BROKER_POSITIONS = {"report": 0}


def node_codes() -> set[str]:
    """Every code raised anywhere in node/, and every code the embedded broker reports (broker/)."""
    found = set().union(*(codes_in(path) for path in sorted((ROOT / "node").rglob("*.py"))))
    broker = (codes_in(path, BROKER_POSITIONS) for path in sorted((ROOT / "broker").rglob("*.py")))
    return found.union(*broker)
