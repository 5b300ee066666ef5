#!/usr/bin/env python3
"""Checks that the crate's top-level modules depend on each other in one direction only.

Reads every `crate::<module>` mention in src/ outside `#[cfg(test)]` blocks (doc comments count: a doc that
points up the stack is a dependency a reader follows), builds the graph of top-level
modules, and prints each cycle it finds (exit 1), or the modules in an order a reader can follow bottom-up
(exit 0). CI runs it: `python3 scripts/module-cycles.py [src]`.
"""
import collections
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
graph = collections.defaultdict(set)
for folder, _, files in os.walk(src):
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(folder, name)
        top = os.path.relpath(path, src).split(os.sep)[0]
        module = top[:-3] if top.endswith(".rs") else top
        if module in ("lib", "main"):
            continue
        graph[module]
        with open(path, encoding="utf-8") as f:
            text = f.read().split("#[cfg(test)]")[0]
        graph[module] |= {m for m in re.findall(r"crate::([a-z_0-9]+)", text) if m != module}

order, state, cycles = [], {}, []


def visit(node, stack):
    state[node] = "open"
    stack.append(node)
    for dep in sorted(graph[node]):
        if state.get(dep) == "open":
            cycles.append(stack[stack.index(dep):] + [dep])
        elif dep not in state:
            visit(dep, stack)
    stack.pop()
    state[node] = "done"
    order.append(node)


for node in sorted(graph):
    if node not in state:
        visit(node, [])
if cycles:
    for cycle in cycles:
        print("module cycle: " + " -> ".join(cycle))
    sys.exit(1)
print("modules, each depending only on those before it: " + " ".join(order))
