"""Mutation check of the core maths, the preprocessing and the bulk writer's item classification.

Not part of CI (it takes about a quarter of an hour on 2 cores). Run it from the repository root
with the test environment's Python (3.11 or later, for tomllib):

    python scripts/mutation_check.py                      # every target
    python scripts/mutation_check.py --target preprocess  # one target (repeatable)
    python scripts/mutation_check.py --list               # print the mutants, run nothing

Each mutant changes one operator or constant of a target module (comparisons, arithmetic, and/or,
``not``, unary minus, numbers, booleans), made with Python's ``ast``. It is written into a private
copy of the working tree, never into the tree itself, and the tests relevant to that module run
against the copy: a mutant is killed when they fail, and survives when they pass. Tests that need
the OpenSearch node (or start clusters) are deselected: one node start per mutant would take hours,
and the bulk writer's classification has node-free tests against a scripted client. Docstrings,
strings, f-strings, annotations and logging calls are not mutated.

Exit status 0: every mutant killed but the known equivalent ones (``EQUIVALENT``); 1: others survived
(listed with their line); 2: the unmutated copy already fails its tests.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
NOT_NODE = ["-m", "not opensearch and not slow"]  # the node-free tests
TARGETS: dict[str, tuple[str, list[str]]] = {
    "metrics": ("src/gemsearch/metrics.py", ["tests/test_metrics.py"]),
    "preprocess": ("src/gemsearch/preprocess.py", ["tests/test_preprocess.py"]),
    "bulk_models": ("plugin/stores/opensearch/bulk_models.py", ["tests/test_bulk.py", *NOT_NODE]),
    "bulk": ("plugin/stores/opensearch/bulk.py", ["tests/test_bulk.py", *NOT_NODE]),
}

# Mutants that survive because no behaviour can tell them apart, keyed by (file, function, change,
# occurrence of that change in the function).
BULK = "plugin/stores/opensearch/bulk.py"
STRICT_OFF = "True  ->  False   in  strict=True"
EQUIVALENT: dict[tuple[str, str, str, int], str] = {
    ("src/gemsearch/metrics.py", "_as_rankings", "False  ->  True   in  copy=False", 0): (
        "astype copies the array instead of reusing it: same values"
    ),
    ("src/gemsearch/metrics.py", "compute_map", STRICT_OFF, 0): (
        "_as_rankings has already refused a ranking count other than the query count"
    ),
    (BULK, "BulkWriter._send", "True  ->  False   in  return True", 1): (
        "unreachable: the loop returns from inside, and a request is never empty"
    ),
    (BULK, "BulkWriter._classify", STRICT_OFF, 0): "the item count was checked just before",
    (BULK, "BulkWriter._classify", STRICT_OFF, 1): "the item count was checked just before",
}
COMPARE_SWAPS: dict[type[ast.cmpop], list[type[ast.cmpop]]] = {
    ast.Lt: [ast.LtE, ast.GtE],
    ast.LtE: [ast.Lt, ast.Gt],
    ast.Gt: [ast.GtE, ast.LtE],
    ast.GtE: [ast.Gt, ast.Lt],
    ast.Eq: [ast.NotEq],
    ast.NotEq: [ast.Eq],
    ast.In: [ast.NotIn],
    ast.NotIn: [ast.In],
    ast.Is: [ast.IsNot],
    ast.IsNot: [ast.Is],
}
BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
}
SYMBOLS = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-",
    ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.BitOr: "|",
    ast.BitAnd: "&", ast.And: "and", ast.Or: "or",
}  # fmt: skip


@dataclass
class Mutant:
    target: str
    index: int  # position among the target's mutation points, in walk order
    line: int
    column: int
    function: str  # the enclosing function (Class.method), "" at module level
    change: str  # the expression changed, before -> after
    occurrence: int = 0  # how many mutants above this one in its function make the same change

    def label(self) -> str:
        return f"{TARGETS[self.target][0]}:{self.line} ({self.function or 'module'}): {self.change}"

    def equivalent(self) -> str | None:
        """Why this mutant cannot change behaviour, if it is a known equivalent one."""
        return EQUIVALENT.get((TARGETS[self.target][0], self.function, self.change, self.occurrence))


@dataclass
class Result:
    mutant: Mutant
    outcome: str  # killed, survived, timeout
    seconds: float


# ----------------------------------------------------------------------------- mutation points


def _skipped_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes never mutated: docstrings, annotations, f-strings, logging calls, __all__."""
    skip: set[int] = set()

    def cover(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                cover(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            cover(node.returns)
            for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]:
                cover(arg.annotation)
        if isinstance(node, ast.AnnAssign):
            cover(node.annotation)
        if isinstance(node, ast.JoinedStr):
            cover(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in ("log", "logging", "logger"):
                cover(node)
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            cover(node)
    return skip


def _points(tree: ast.Module) -> Iterator[tuple[ast.AST, int, str]]:
    """(node, variant, description) for every mutation of ``tree``, in a stable order."""
    skip = _skipped_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                for v, new in enumerate(COMPARE_SWAPS.get(type(op), [])):
                    yield node, k * 10 + v, f"{SYMBOLS[type(op)]} -> {SYMBOLS[new]}"
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINOP_SWAPS:
            yield node, 0, f"{SYMBOLS[type(node.op)]} -> {SYMBOLS[BINOP_SWAPS[type(node.op)]]}"
        elif isinstance(node, ast.BoolOp):
            other = ast.Or if isinstance(node.op, ast.And) else ast.And
            yield node, 0, f"{SYMBOLS[type(node.op)]} -> {SYMBOLS[other]}"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            yield node, 0, f"drop {'not' if isinstance(node.op, ast.Not) else 'unary -'}"
        elif isinstance(node, ast.Constant) and not isinstance(node.value, str):
            value = node.value
            if isinstance(value, bool):
                yield node, 0, f"{value} -> {not value}"
            elif isinstance(value, (int, float)):
                yield node, 0, f"{value!r} -> {_bumped(value)!r}"


def _bumped(value: int | float) -> int | float:
    if value == 1:
        return 0 if isinstance(value, int) else 2.0
    return value + 1


class _Apply(ast.NodeTransformer):
    """Applies mutation number ``index`` (in ``_points`` order) to the tree it visits."""

    def __init__(self, node: ast.AST, variant: int) -> None:
        self.node, self.variant = node, variant

    def visit(self, node: ast.AST) -> ast.AST:
        if node is not self.node:
            return super().visit(node)
        if isinstance(node, ast.Compare):
            k, v = divmod(self.variant, 10)
            node.ops[k] = COMPARE_SWAPS[type(node.ops[k])][v]()
        elif isinstance(node, (ast.BinOp, ast.AugAssign)):
            node.op = BINOP_SWAPS[type(node.op)]()
        elif isinstance(node, ast.BoolOp):
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        elif isinstance(node, ast.UnaryOp):
            return node.operand
        elif isinstance(node, ast.Constant):
            node.value = (not node.value) if isinstance(node.value, bool) else _bumped(node.value)
        return node


def mutants(target: str, source: str) -> list[Mutant]:
    """Every mutant of ``source``, described as ``original -> mutated`` expression."""
    tree = ast.parse(source)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    owners = _owners(tree)
    found = []
    for i, (node, variant, _) in enumerate(_points(tree)):
        before = ast.unparse(node)
        twin = copy.deepcopy(node)
        after = ast.unparse(_Apply(twin, variant).visit(twin))
        change = f"{_short(before)}  ->  {_short(after)}"
        if isinstance(node, ast.Constant):  # a bare number says little: name where it stands
            change += f"   in  {_short(ast.unparse(parents[id(node)]))}"
        where = (node.lineno, node.col_offset)  # type: ignore[attr-defined]
        found.append(Mutant(target, i, *where, owners.get(id(node), ""), change))
    for m in found:  # counted in source order (ast.walk goes breadth first)
        m.occurrence = sum(
            (o.line, o.column) < (m.line, m.column) and (o.function, o.change) == (m.function, m.change)
            for o in found
        )
    return found


def _owners(tree: ast.Module) -> dict[int, str]:
    """id of every node -> the name of the function it is in, with its class: ``Class.method``."""
    owners: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                inner = name if not isinstance(child, ast.ClassDef) else owner
                owners.update((id(n), name if inner else owner) for n in ast.walk(child))
                visit(child, f"{name}.", inner)
            else:
                visit(child, prefix, owner)

    visit(tree, "", "")
    return owners


def _short(code: str, limit: int = 70) -> str:
    code = " ".join(code.split())
    return code if len(code) <= limit else code[: limit - 3] + "..."


def mutated_source(source: str, index: int) -> str:
    tree = ast.parse(source)
    node, variant, _ = list(_points(tree))[index]
    tree = _Apply(node, variant).visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree))


# ----------------------------------------------------------------------------- the private copy


def make_copy(dest: Path) -> Path:
    """The working tree's tracked and untracked (not ignored) files, importable as ``gemsearch``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    # the installed package maps gemsearch.plugin -> plugin/ etc. (pyproject's package-dir): link the
    # copy's folders into its gemsearch/ so the copy imports as the installed package does
    config = tomllib.loads((dest / "pyproject.toml").read_text())
    mapping: dict[str, str] = dict(config["tool"]["setuptools"]["package-dir"])
    root = dest / mapping.pop("gemsearch")
    for package, folder in mapping.items():
        link = root.joinpath(*package.split(".")[1:])
        if not link.exists():
            link.symlink_to(dest / folder, target_is_directory=True)
    return root.parent


def run_tests(workdir: Path, pythonpath: Path, args: list[str], timeout: float) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started
    seconds = time.monotonic() - started
    if proc.returncode == 0:
        return "survived", seconds
    if proc.returncode in (1, 2):  # failures, or an error collecting (an import broken by the mutant)
        return "killed", seconds
    raise RuntimeError(f"pytest exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def check_target(target: str, workdir: Path, pythonpath: Path) -> list[Result]:
    path, test_args = TARGETS[target]
    module = workdir / path
    original = module.read_text()
    found = mutants(target, original)
    # the copy must be what the tests import, and pass them unmutated (also after an ast round trip)
    probe = subprocess.run(
        [sys.executable, "-c", "import gemsearch; print(gemsearch.__file__)"],
        env={**os.environ, "PYTHONPATH": str(pythonpath)}, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not probe.startswith(str(workdir)):
        raise RuntimeError(f"the copy is not what Python imports: gemsearch from {probe}")
    module.write_text(ast.unparse(ast.parse(original)))
    outcome, baseline = run_tests(workdir, pythonpath, test_args, timeout=1800)
    if outcome != "survived":
        module.write_text(original)
        print(f"{target}: the unmutated tests fail ({outcome}); nothing to measure", flush=True)
        sys.exit(2)
    print(f"{target}: {len(found)} mutants of {path}; tests pass unmutated in {baseline:.1f}s", flush=True)
    results = []
    try:
        for m in found:
            module.write_text(mutated_source(original, m.index))
            outcome, seconds = run_tests(workdir, pythonpath, test_args, timeout=max(60.0, 5 * baseline))
            results.append(Result(m, outcome, seconds))
            mark = {"killed": ".", "survived": "S", "timeout": "T"}[outcome]
            print(mark, end="" if len(results) % 60 else "\n", flush=True)
    finally:
        module.write_text(original)
    print(flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", action="append", choices=sorted(TARGETS), help="default: all")
    ap.add_argument("--list", action="store_true", help="print the mutants and stop")
    ap.add_argument("--json", type=Path, help="also write every result to this file")
    args = ap.parse_args(argv)
    targets = args.target or list(TARGETS)
    if args.list:
        for target in targets:
            for m in mutants(target, (REPO / TARGETS[target][0]).read_text()):
                print(m.label())
        return 0
    started = time.monotonic()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="gemsearch-mutants-") as tmp:
        workdir = Path(tmp) / "repo"
        pythonpath = make_copy(workdir)
        for target in targets:
            results += check_target(target, workdir, pythonpath)
    survivors = [r for r in results if r.outcome == "survived"]
    unexplained = [r for r in survivors if r.mutant.equivalent() is None]
    print(f"\n{len(results)} mutants, {len(results) - len(survivors)} killed, {len(survivors)} survived "
          f"({len(survivors) - len(unexplained)} of them known equivalents), "
          f"in {(time.monotonic() - started) / 60:.1f} min")  # fmt: skip
    for target in targets:
        mine = [r for r in results if r.mutant.target == target]
        alive = [r for r in mine if r.outcome == "survived"]
        print(f"\n{target}: {len(mine) - len(alive)}/{len(mine)} killed" + (", survivors:" if alive else ""))
        for r in alive:
            why = r.mutant.equivalent()
            print(f"  {r.mutant.label()}" + (f"\n      equivalent: {why}" if why else ""))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
