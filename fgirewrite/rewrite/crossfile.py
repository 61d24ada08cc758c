"""References to a project's Function classes from its other files, before any is rewritten.

A rewritten class stays importable under its name, and its ``apply`` (and its own class
attributes) keep working wherever they are reached. What another file may do that the
rewrite would change is found here: a subclass with a body of its own (``class
Steeper(lib.Spike)``, whatever its header spells), an attribute of the Function protocol
(``Spike.forward``), introspection (``isinstance``, ``issubclass``, ``type``), a test for
``torch.autograd.Function`` in a module that reaches the class, or the class called. A class
so used is left alone, with a reason that names the other file and line.

References are resolved as Python resolves them from each file, through its import roots
(``project.import_roots``): ``from a import Spike``, ``import a; a.Spike.apply``, relative
imports, a package's re-exports, star imports and module-level aliases. A subclass that adds
nothing keeps working as it did, and its own uses are followed in turn. Uses inside
TorchScript functions compiled at import are recorded, not judged: whether they still
compile is for the project's import check to find out. Nothing is imported or executed.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fgirewrite.discover import PROTOCOL, dotted, qualify
from fgirewrite.project import import_roots, relative_module
from fgirewrite.rewrite.uses import INTROSPECTION, KEPT_ATTRIBUTES, introspection
from fgirewrite.surrogate import GRAD, Surrogate

SCRIPT_FUNCTIONS = frozenset({"torch.jit.script", "torch.jit.script_if_tracing"})


@dataclass(frozen=True)
class ClassRef:
    """A class of a project file, by its qualified name (``Outer.Inner`` when nested)."""

    path: Path  # resolved
    qualname: str


@dataclass(frozen=True)
class Use:
    """A place in another file that reaches a class about to be rewritten."""

    target: ClassRef  # the class about to be rewritten (the base, for a subclass's uses)
    path: Path
    line: int
    scripted: str | None = None  # the TorchScript function compiled at import it sits in
    breaks: str | None = None  # why the rewrite would break it, naming the file and line
    code: str = "relies-on-function"  # the reason code, when it breaks


@dataclass
class References:
    """What the project's files do with the classes about to be rewritten."""

    uses: list[Use] = field(default_factory=list)

    def refusals(self) -> dict[ClassRef, tuple[str, str]]:
        """Each class a use would break, with the first such use's reason code and reason."""
        found: dict[ClassRef, tuple[str, str]] = {}
        for use in sorted(self.uses, key=lambda u: (str(u.path), u.line)):
            if use.breaks is not None:
                found.setdefault(use.target, (use.code, use.breaks))
        return found

    def reached_from(self, path: Path) -> set[ClassRef]:
        """The classes a file reaches directly."""
        return {u.target for u in self.uses if u.path == path}


# What a name stands for: a module (a file, or a folder without __init__.py), a class of a
# project file, or something fgirewrite does not follow (None).
Target = Path | ClassRef | None


class _Module:
    """One parsed project file: its module-level bindings and classes."""

    def __init__(self, path: Path, tree: ast.Module):
        self.path = path
        self.tree = tree
        self.bindings: dict[str, ast.stmt] = {}  # name -> the last top-level statement binding it
        self.stars: list[ast.ImportFrom] = []
        self.classes: dict[str, ast.ClassDef] = {}  # qualname -> class, nested ones too
        for stmt in _top_level(tree.body):
            for name in _bound(stmt):
                self.bindings[name] = stmt
            if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
                self.stars.append(stmt)
            if isinstance(stmt, ast.ClassDef):
                self._add_classes(stmt, "")

    def _add_classes(self, node: ast.ClassDef, prefix: str) -> None:
        self.classes[prefix + node.name] = node
        for child in node.body:
            if isinstance(child, ast.ClassDef):
                self._add_classes(child, f"{prefix}{node.name}.")


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, looking into if/try/with blocks (not into defs or classes)."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try, ast.With)):
            for name in ("body", "orelse", "finalbody"):
                yield from _top_level(getattr(stmt, name, []))
            for handler in getattr(stmt, "handlers", []):
                yield from _top_level(handler.body)


def _bound(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return [stmt.name]
    if isinstance(stmt, ast.Import):
        return [a.asname or a.name.split(".")[0] for a in stmt.names]
    if isinstance(stmt, ast.ImportFrom):
        return [a.asname or a.name for a in stmt.names if a.name != "*"]
    if isinstance(stmt, ast.Assign):
        return [n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


_DEPTH = 32  # re-exports followed at most this deep (a cycle of them ends there)


class Project:
    """The project's files, parsed on demand, with names resolved as each file imports them."""

    def __init__(self, pythonpath: Sequence[Path] | None = None):
        self.pythonpath = None if pythonpath is None else tuple(pythonpath)
        self._modules: dict[Path, _Module | None] = {}
        self._roots: dict[Path, list[Path]] = {}

    def module(self, path: Path) -> _Module | None:
        """The parsed file, or None if it cannot be read or parsed."""
        if path not in self._modules:
            try:
                tree = ast.parse(path.read_bytes(), filename=str(path))
                self._modules[path] = _Module(path, tree)
            except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
                self._modules[path] = None
        return self._modules[path]

    def find(self, name: str, importer: Path) -> Path | None:
        """The file (or namespace folder) that ``import name`` loads in ``importer``."""
        if importer not in self._roots:
            self._roots[importer] = import_roots(importer, self.pythonpath)
        relative = Path(*name.split("."))
        roots = self._roots[importer]
        for root in roots:
            for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
                if candidate.is_file():
                    return candidate.resolve()
        return next(((r / relative).resolve() for r in roots if (r / relative).is_dir()), None)

    def imported(
        self, stmt: ast.Import | ast.ImportFrom, name: str, importer: Path, depth: int = 0
    ) -> Target:
        """What importing ``name`` (as spelled in ``stmt``, not its alias) binds."""
        if isinstance(stmt, ast.Import):
            return self.find(name, importer)
        module = relative_module(importer, stmt.module, stmt.level) if stmt.level else stmt.module
        source = None if module is None else self.find(module, importer)
        return self.attribute(source, name, depth + 1)

    def attribute(self, target: Target, name: str, depth: int = 0) -> Target:
        """``target.name``: a module's global or submodule, or a class's nested class."""
        if target is None or depth > _DEPTH:
            return None
        if isinstance(target, ClassRef):
            module = self.module(target.path)
            nested = f"{target.qualname}.{name}"
            return ClassRef(target.path, nested) if module and nested in module.classes else None
        if target.is_file():
            found = self.exported(target, name, depth)
            if found is not None or target.name != "__init__.py":
                return found
        folder = target if target.is_dir() else target.parent
        for candidate in (folder / f"{name}.py", folder / name / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
        return (folder / name).resolve() if (folder / name).is_dir() else None

    def exported(self, path: Path, name: str, depth: int = 0) -> Target:
        """What the module at ``path`` binds ``name`` to at its top level."""
        module = self.module(path)
        if module is None or depth > _DEPTH:
            return None
        stmt = module.bindings.get(name)
        if stmt is None:
            for star in module.stars:
                if (found := self.imported(star, name, path, depth)) is not None:
                    return found
            return None
        if isinstance(stmt, ast.ClassDef):
            return ClassRef(path, name)
        if isinstance(stmt, ast.Import):
            alias = next(a for a in stmt.names if (a.asname or a.name.split(".")[0]) == name)
            return self.imported(stmt, alias.name if alias.asname else name, path, depth)
        if isinstance(stmt, ast.ImportFrom):
            alias = next(a for a in stmt.names if (a.asname or a.name) == name)
            return self.imported(stmt, alias.name, path, depth)
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            value = dotted(stmt.value)
            if isinstance(stmt.targets[0], ast.Name) and value is not None:
                return self.dotted(path, value, depth + 1)
        return None

    def kind(self, path: Path, name: str, depth: int = 0) -> str | None:
        """What the module at ``path`` binds ``name`` to: "module", "function", "class" or
        "value" (anything assigned); None when that cannot be told (an installed package's)."""
        module = self.module(path)
        stmt = module.bindings.get(name) if module and depth <= _DEPTH else None
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return "function"
        if isinstance(stmt, ast.ClassDef):
            return "class"
        if isinstance(stmt, ast.Import):
            return "module"
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            return "function" if isinstance(getattr(stmt, "value", None), ast.Lambda) else "value"
        if isinstance(stmt, ast.ImportFrom):
            alias = next(a for a in stmt.names if (a.asname or a.name) == name)
            found = self.imported(stmt, alias.name, path, depth)
            if isinstance(found, Path):
                return "module"
            if isinstance(found, ClassRef):
                return "class"
            source = relative_module(path, stmt.module, stmt.level) if stmt.level else stmt.module
            origin = None if source is None else self.find(source, path)
            if origin is not None and origin.is_file():
                return self.kind(origin, alias.name, depth + 1)
        return None

    def dotted(self, path: Path, name: str, depth: int = 0) -> Target:
        """A dotted name as the module at ``path`` resolves it at its top level."""
        head, *rest = name.split(".")
        target = self.exported(path, head, depth)
        for part in rest:
            target = self.attribute(target, part, depth)
        return target


def find_references(
    classes: Iterable[ClassRef],
    files: Iterable[Path],
    pythonpath: Sequence[Path] | None = None,
    show: Callable[[Path], str] = str,
    reads: Mapping[ClassRef, Collection[str]] | None = None,
) -> References:
    """Every use, in ``files``, of the ``classes`` about to be rewritten (and of the subclasses
    of theirs that add nothing); ``show`` gives the path to print for a resolved one. Only
    files that spell a class's name are parsed. ``reads``: the module-level names each
    class's FGI function reads (``global_reads``): a TorchScript caller compiled at import
    breaks when one is a value (TorchScript cannot close over a Python value)."""
    project = Project(pythonpath)
    files = list(files)
    rewritten = set(classes)
    followed: dict[ClassRef, ClassRef] = {c: c for c in rewritten}  # class -> the rewritten one
    found = References()
    scanned: set[tuple[Path, ClassRef]] = set()
    while True:
        new: dict[ClassRef, ClassRef] = {}
        for given in files:
            spelled = _spelled(given, {c.qualname.split(".")[0] for c in followed})
            if not spelled:
                continue
            path = given.resolve()
            # A rewritten class's own file is the single-file rewrite's to judge (uses.py).
            todo = {
                c
                for c in followed
                if c.qualname.split(".")[0] in spelled
                and (path, c) not in scanned
                and (c.path != path or c not in rewritten)
            }
            module = project.module(path) if todo else None
            if module is None:
                continue
            scanned.update((path, c) for c in todo)
            try:
                uses = list(
                    _FileUses(project, module, todo, followed, show(path), reads or {}).uses()
                )
            except Exception as exc:  # noqa: BLE001 - a bug here must not let a rewrite break it
                why = f"{show(path)}: fgirewrite could not read what it does with it ({exc!r})"
                uses = [(Use(followed[c], path, 1, breaks=why), None) for c in todo]
            for use, subclass in uses:
                found.uses.append(use)
                if subclass is not None and subclass not in followed:
                    new[subclass] = use.target
        if not new:
            return found
        followed.update(new)


def _spelled(path: Path, names: set[str]) -> set[str]:
    """The ``names`` a file spells as words (a substring test first: it is fast)."""
    try:
        data = path.read_bytes()
    except OSError:
        return set()
    return {
        name
        for name in names
        if name.encode() in data
        and re.search(rb"(?<![\w\x80-\xff])%s(?![\w\x80-\xff])" % re.escape(name.encode()), data)
    }


class _FileUses:
    """The uses of some classes in one file."""

    def __init__(
        self,
        project: Project,
        module: _Module,
        targets: set[ClassRef],
        followed: dict[ClassRef, ClassRef],
        where: str,
        reads: Mapping[ClassRef, Collection[str]],
    ):
        self.project = project
        self.reads = reads
        self.module = module
        self.targets = targets
        self.followed = followed
        self.where = where
        self.parents = {
            id(child): node
            for node in ast.walk(module.tree)
            for child in ast.iter_child_nodes(node)
        }
        spelled = {c.qualname.split(".")[-1] for c in targets}
        self.relevant = _relevant(module.tree, spelled)
        self.local = _local_bindings(project, module, self.relevant)

    def lookup(self, name: str) -> Target:
        if name in self.local:
            return self.local[name]
        if name not in self.relevant:
            return None
        for star in self.module.stars:
            if (found := self.project.imported(star, name, self.module.path)) is not None:
                return found
        return None

    def uses(self) -> Iterator[tuple[Use, ClassRef | None]]:
        """Each use, with the subclass it defines when that subclass adds nothing."""
        tree = self.module.tree
        scripted = _scripted_functions(tree)
        tested = introspection(list(ast.walk(tree)), _imports(tree))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)):
                continue
            reached = self._reach(node)
            if reached is None or self._rebound_before(node):
                continue
            expr, cls = reached
            base = self.followed[cls]
            line = expr.lineno
            function = next((n for n, (a, b) in scripted.items() if a <= line <= b), None)
            if function is not None:
                why = self._uncompilable(base, function, line)
                yield Use(base, self.module.path, line, function, why, "breaks-import"), None
            elif tested is not None:
                what = tested.message.split(" (line")[0]
                why = f"{self.where}:{tested.line}: {what}, in a module that uses it"
                yield Use(base, self.module.path, tested.line, breaks=why), None
            else:
                yield self._classify(expr, cls, base)

    def _rebound_before(self, node: ast.Name) -> bool:
        """Module-level code that assigned the name something else earlier in the same block,
        or in a block around it (``stdp = LTD(...)``, then ``stdp(x)``): there it no longer
        means the class. An alias (``s = lib.Spike``) still does."""
        child: ast.AST = node
        parent = self.parents.get(id(node))
        while parent is not None:
            if isinstance(
                parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
            ):
                return False  # run later, whenever called: the module's order says nothing
            for attr in ("body", "orelse", "finalbody"):
                block = getattr(parent, attr, None)
                if not isinstance(block, list):
                    continue
                before = next((block[:i] for i, s in enumerate(block) if s is child), [])
                if any(_assigns(s, node.id) for s in before):
                    return True
            child, parent = parent, self.parents.get(id(parent))
        return False

    def _uncompilable(self, base: ClassRef, function: str, line: int) -> str | None:
        """Why TorchScript would fail to compile the class's FGI function for ``function``:
        it reads a module-level value (or class), which TorchScript cannot close over."""
        for name in sorted(self.reads.get(base, ())):
            kind = self.project.kind(base.path, name)
            if kind in ("value", "class"):
                return (
                    f"`{function}` ({self.where}:{line}) calls it and is compiled by TorchScript "
                    f"at import: its FGI function would read the module-level {kind} `{name}`, "
                    "which TorchScript cannot compile"
                )
        return None

    def _reach(self, node: ast.Name) -> tuple[ast.expr, ClassRef] | None:
        """The longest attribute chain from ``node`` that names one of the targets."""
        target = self.lookup(node.id)
        expr: ast.expr = node
        while target is not None and target not in self.targets:
            parent = self.parents.get(id(expr))
            if not (isinstance(parent, ast.Attribute) and parent.value is expr):
                return None
            target = self.project.attribute(target, parent.attr)
            expr = parent
        return (expr, target) if isinstance(target, ClassRef) else None

    def _classify(
        self, expr: ast.expr, cls: ClassRef, base: ClassRef
    ) -> tuple[Use, ClassRef | None]:
        parent = self.parents.get(id(expr))
        path, line, where = self.module.path, expr.lineno, self.where
        if isinstance(parent, ast.Attribute):
            allowed = KEPT_ATTRIBUTES | self._attributes(cls) | self._attributes(base)
            if parent.attr in allowed:
                return Use(base, path, line), None
            return Use(base, path, line, breaks=f"{where}:{line} uses its `{parent.attr}`"), None
        if isinstance(parent, ast.ClassDef) and any(b is expr for b in parent.bases):
            return self._subclass(parent, base)
        if isinstance(parent, ast.Call) and parent.func is expr:
            then = self.parents.get(id(parent))
            if not (parent.args or parent.keywords) and (  # `Spike().apply(...)`: legacy, kept
                isinstance(then, ast.Attribute) and then.attr == "apply"
            ):
                return Use(base, path, line), None
            return Use(base, path, line, breaks=f"{where}:{line} calls the class itself"), None
        call = _introspecting_call(expr, self.parents)
        if call is not None:
            why = f"`{call}` is called with it at {where}:{line}"
            return Use(base, path, line, breaks=why), None
        return Use(base, path, line), None

    def _subclass(self, node: ast.ClassDef, base: ClassRef) -> tuple[Use, ClassRef | None]:
        path, line = self.module.path, node.lineno
        defined = _defined(node) + [f"{k.arg}=" for k in node.keywords]
        if not defined:
            qualname = next((q for q, c in self.module.classes.items() if c is node), None)
            return Use(base, path, line), (None if qualname is None else ClassRef(path, qualname))
        what = defined[0]
        if what in PROTOCOL:
            why = f"overrides `{what}`, so it must stay a torch.autograd.Function"
        else:
            why = (
                f"defines `{what}`: a class is rewritten only when its subclasses in other files "
                "add nothing"
            )
        message = f"`{node.name}` ({self.where}:{line}) subclasses it and {why}"
        return Use(base, path, line, breaks=message), None

    def _attributes(self, cls: ClassRef) -> set[str]:
        """What a class body binds, but the protocol: kept by a rewritten class."""
        module = self.project.module(cls.path)
        node = module.classes.get(cls.qualname) if module else None
        if node is None:
            return set()
        return {n for stmt in node.body for n in _bound(stmt)} - PROTOCOL


def _defined(node: ast.ClassDef) -> list[str]:
    """What a class body defines, beyond a docstring, ``pass`` and ``...``."""
    names = []
    for stmt in node.body:
        if isinstance(stmt, ast.Pass) or (
            isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        ):
            continue
        names.extend(_bound(stmt) or [type(stmt).__name__.lower()])
    return names


def _introspecting_call(node: ast.expr, parents: dict[int, ast.AST]) -> str | None:
    """The introspection builtin (``isinstance``, ``issubclass``, ...) among whose arguments
    ``node`` stands, directly or in a tuple or list."""
    child: ast.AST = node
    parent = parents.get(id(node))
    while isinstance(parent, (ast.Tuple, ast.List)):
        child, parent = parent, parents.get(id(parent))
    if (
        isinstance(parent, ast.Call)
        and isinstance(parent.func, ast.Name)
        and parent.func.id in INTROSPECTION
        and any(a is child for a in parent.args)
    ):
        return parent.func.id
    return None


def _assigns(stmt: ast.stmt, name: str) -> bool:
    """``name = <not a dotted name>``: the statement binds the name to another value."""
    return (
        isinstance(stmt, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets)
        and dotted(stmt.value) is None
    )


def _relevant(tree: ast.Module, names: set[str]) -> set[str]:
    """The names of a module that could lead to a class named in ``names``: those names
    themselves, the heads of attribute chains that spell one, names imported or assigned
    from something that spells one. Only these are resolved (resolving means parsing the
    modules they come from)."""
    relevant = set(names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            head = node.value
            while isinstance(head, ast.Attribute):
                head = head.value
            if isinstance(head, ast.Name):
                relevant.add(head.id)
        elif isinstance(node, ast.ImportFrom):
            relevant |= {a.asname for a in node.names if a.asname and a.name in names}
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            value = dotted(node.value)
            if value is not None and isinstance(node.targets[0], ast.Name):
                if names & set(value.split(".")):
                    relevant |= {node.targets[0].id, value.split(".")[0]}
    return relevant


def _local_bindings(project: Project, module: _Module, relevant: set[str]) -> dict[str, Target]:
    """What each ``relevant`` imported, defined or aliased name of a module stands for:
    imports anywhere in it (in functions too), its own classes, aliases at its top level."""
    local: dict[str, Target] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    continue
                if isinstance(node, ast.Import):
                    name = alias.asname or alias.name.split(".")[0]
                    spelled = alias.name if alias.asname else name
                else:
                    name, spelled = alias.asname or alias.name, alias.name
                if name not in relevant:
                    continue
                target = project.imported(node, spelled, module.path)
                if target is not None:
                    local[name] = target
    for qualname in module.classes:
        if "." not in qualname and qualname in relevant:
            local.setdefault(qualname, ClassRef(module.path, qualname))
    for stmt in _top_level(module.tree.body):
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            value = dotted(stmt.value)
            bound = stmt.targets[0]
            if isinstance(bound, ast.Name) and bound.id in relevant and value is not None:
                head, _, rest = value.partition(".")
                target = local.get(head)
                for part in rest.split(".") if rest else []:
                    target = project.attribute(target, part)
                if target is not None:
                    local[bound.id] = target
    return local


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> qualified name of each absolute import anywhere in the module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                head = alias.name.split(".")[0]
                names[alias.asname or head] = alias.name if alias.asname else head
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _scripted_functions(tree: ast.Module) -> dict[str, tuple[int, int]]:
    """Module-level functions TorchScript compiles at import (decorated with
    ``torch.jit.script``, or passed to it at the top level): name -> first and last line."""
    imports = _imports(tree)
    functions = {
        s.name: s for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
    }

    def scripts(expr: ast.expr) -> bool:
        spelled = dotted(expr.func if isinstance(expr, ast.Call) else expr)
        return spelled is not None and qualify(spelled, imports) in SCRIPT_FUNCTIONS

    found = {
        name for name, node in functions.items() if any(scripts(d) for d in node.decorator_list)
    }
    for stmt in _top_level(tree.body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for call in (n for n in ast.walk(stmt) if isinstance(n, ast.Call) and scripts(n.func)):
            found |= {a.id for a in call.args if isinstance(a, ast.Name) and a.id in functions}
    return {n: (functions[n].lineno, functions[n].end_lineno or functions[n].lineno) for n in found}


def global_reads(surrogate: Surrogate) -> set[str]:
    """The module-level names a surrogate's FGI function reads (besides builtins)."""
    local = {GRAD, surrogate.output, *surrogate.param_names}
    local |= {fresh for fresh, _ in surrogate.snapshots} | {g.delta for g in surrogate.gradients}
    loads: set[str] = set()
    for code in [surrogate.forward, surrogate.prelude, *(g.template for g in surrogate.gradients)]:
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Name):
                (loads if isinstance(node.ctx, ast.Load) else local).add(node.id)
            elif isinstance(node, ast.arg):
                local.add(node.arg)
    return loads - local - set(dir(builtins))
