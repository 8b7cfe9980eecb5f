#!/usr/bin/env python3
"""Fails if modules of src/ import each other in a circle.

Two levels are checked: the crate's top-level modules (src/a.rs or src/a/), and the
siblings inside each folder module (src/a/b.rs, src/a/c/). An import is any `crate::a::...`
or `super::b` path outside a comment. A child using its parent's items is not a circle (the
parent declares the child); two siblings or two top-level modules using each other are.
Usage: .ci/import-cycles.py [SRC_DIR]
"""
import os
import re
import sys
from collections import defaultdict

src = sys.argv[1] if len(sys.argv) > 1 else "src"
path_re = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")


def module_of(rel):
    """'store/memory/shard.rs' -> ['store', 'memory', 'shard']; mod.rs names its folder."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


edges = defaultdict(set)  # (level-prefix tuple) -> set of (from, to)
for root, _, files in os.walk(src):
    for name in files:
        if not name.endswith(".rs"):
            continue
        rel = os.path.relpath(os.path.join(root, name), src)
        if rel in ("lib.rs", "main.rs"):
            continue
        me = module_of(rel)
        # A file is a module of its own; `super` from it means its parent module.
        for line in open(os.path.join(root, name), encoding="utf-8"):
            code = line.split("//", 1)[0]
            for kind, rest in path_re.findall(code):
                segs = rest.strip(":").split("::")
                target = segs if kind == "crate" else me[:-1] + segs
                # Compare at each level where the two paths share a parent.
                for depth in range(min(len(me), len(target))):
                    if me[:depth] != target[:depth]:
                        break
                    a, b = me[depth], target[depth]
                    if a != b:
                        edges[tuple(me[:depth])].add((a, b))
                        break

failed = False
for parent, pairs in sorted(edges.items()):
    graph = defaultdict(set)
    for a, b in pairs:
        graph[a].add(b)
    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    for comp in sccs:
        if len(comp) > 1:
            failed = True
            where = "::".join(parent) or "crate"
            print(f"import circle in {where}: {' <-> '.join(sorted(comp))}")
            for a, b in sorted(pairs):
                if a in comp and b in comp:
                    print(f"  {a} uses {b}")

if failed:
    sys.exit(1)
print("no import circles between modules of", src)
