"""The import graph of ooc, as issue 26 counts it: files, levels (the longest chain of imports once
cycles are condensed), cycles (strongly connected components), ooc imports inside functions. grimp's
graph (import-linter's), imports under ``if TYPE_CHECKING:`` left out; imports against the floors are
``lint-imports``' job.

    python bench/import_graph.py [checkout]     # default: this one
"""

import ast
import pathlib
import sys

import grimp
import networkx as nx

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
sys.path.insert(0, str(root))
g = grimp.build_graph("ooc", include_external_packages=False, exclude_type_checking_imports=True)
mods = sorted(m for m in g.modules)
G = nx.DiGraph()
for m in mods:
    G.add_node(m)
    for d in g.find_modules_directly_imported_by(m):
        G.add_edge(m, d)
# treat package __init__ -> submodule edges normally
scc = [c for c in nx.strongly_connected_components(G) if len(c) > 1]
C = nx.condensation(G)
level = {}
for n in reversed(list(nx.topological_sort(C))):
    level[n] = 1 + max((level[s] for s in C.successors(n)), default=0)
print("files", len(mods), "levels", max(level.values()), "cycles", len(scc), [sorted(c) for c in scc])
deferred = 0
for p in (root / "ooc").rglob("*.py"):
    tree = ast.parse(p.read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("ooc")
                    or isinstance(node, ast.Import)
                    and any(a.name.startswith("ooc") for a in node.names)
                ):
                    deferred += 1
print("ooc imports inside functions", deferred)
