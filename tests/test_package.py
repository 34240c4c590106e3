"""The package's layout, read from the modules' own imports: one subpackage per stage, imports running one way
(from later stages to earlier ones), no circle anywhere (docs/code.md)."""

from __future__ import annotations

from conftest import ROOT, module_imports

# The stages in pipeline order: a module may import its own stage and the ones before it
STAGES = ("inputs", "synthetic", "cutouts", "shards", "training", "evaluation")
# Top-level helpers every stage may use: they import no stage
HELPERS = {"realfake.atomic", "realfake.figures", "realfake.logs", "realfake.schema"}
# The interfaces over every stage (the command line, the workflow's config, the tests' fixtures): nothing imports them
INTERFACES = {"realfake.cli", "realfake.config", "realfake.testing"}


def all_modules() -> list[str]:
    src = ROOT / "src"
    return sorted(".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
                  for p in (src / "realfake").rglob("*.py"))


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected components of more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_stages_are_subpackages_and_every_module_has_one_place():
    modules = all_modules()
    top = {m for m in modules if stage_of(m) is None} - {"realfake"}
    assert top == HELPERS | INTERFACES, sorted(top ^ (HELPERS | INTERFACES))
    assert {stage_of(m) for m in modules} - {None} == set(STAGES)


def test_no_import_circle():
    """Lazy imports (inside functions) and type-checking ones count: a circle is a circle."""
    graph = {m: module_imports(m) for m in all_modules()}
    assert not cycles(graph), cycles(graph)


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_run_from_later_stages_to_earlier_ones():
    rank = {s: i for i, s in enumerate(STAGES)}
    wrong = []
    for m in all_modules():
        for dep in module_imports(m):
            if dep in INTERFACES and m not in INTERFACES:
                wrong.append(f"{m} imports the interface {dep}")
            elif m in HELPERS and stage_of(dep):
                wrong.append(f"the helper {m} imports the stage module {dep}")
            elif stage_of(m) and stage_of(dep) and rank[stage_of(dep)] > rank[stage_of(m)]:
                wrong.append(f"{m} ({stage_of(m)}) imports {dep}, of the later stage {stage_of(dep)}")
    assert not wrong, "\n".join(wrong)
