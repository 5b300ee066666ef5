#!/usr/bin/env python3
"""Checks that the crate's modules depend on each other in one direction only, at every depth.

Reads every `crate::<module>` mention in src/ outside `#[cfg(test)]` blocks (doc comments count: a doc that
points up the stack is a dependency a reader follows), builds the graph of top-level modules, and does the same
inside each folder for its files: `super::<sibling>`, `crate::<folder>::<sibling>` and `super::<Item>` where the
folder's mod.rs re-exports Item from a sibling (`pub use sibling::Item`). A file's use of its own mod.rs is not an
edge (the parent declares its children). Prints each cycle it finds (exit 1), or the top-level modules in an order
a reader can follow bottom-up (exit 0). CI runs it: `python3 scripts/module-cycles.py [src]`.
"""
import collections
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")


def code_of(path):
    """A file's text before its `#[cfg(test)]` block."""
    with open(path, encoding="utf-8") as f:
        return f.read().split("#[cfg(test)]")[0]


def top_graph():
    """{top-level module: {top-level modules it mentions}}."""
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
            graph[module] |= {m for m in re.findall(r"crate::([a-z_0-9]+)", code_of(path)) if m != module}
    return graph


def sibling_graphs():
    """{folder: {file module: {sibling modules it uses}}} for every folder with a mod.rs."""
    graphs = {}
    for folder, _, files in os.walk(src):
        if "mod.rs" not in files:
            continue
        children = {n[:-3] for n in files if n.endswith(".rs") and n != "mod.rs"}
        children |= {d for d in os.listdir(folder) if os.path.isfile(os.path.join(folder, d, "mod.rs"))}
        mod_text = code_of(os.path.join(folder, "mod.rs"))
        exported = {}
        for child, names in re.findall(r"pub use ([a-z_0-9]+)::\{?([^;]*?)\}?;", mod_text):
            for name in re.findall(r"[A-Za-z_0-9]+", names):
                exported.setdefault(name, child)
        path_in_crate = os.path.relpath(folder, src).replace(os.sep, "::")
        graph_here = collections.defaultdict(set)
        for child in children:
            file = os.path.join(folder, child + ".rs")
            if not os.path.isfile(file):
                file = os.path.join(folder, child, "mod.rs")
            text = code_of(file)
            used = set(re.findall(r"super::([A-Za-z_0-9]+)", text))
            for group in re.findall(r"super::\{([^;]*)\}", text):
                used |= set(re.findall(r"(?:^|[{,]\s*)([A-Za-z_0-9]+)", group))
            used |= set(re.findall(r"crate::" + re.escape(path_in_crate) + r"::([A-Za-z_0-9]+)", text))
            graph_here[child]
            for name in used:
                target = name if name in children else exported.get(name)
                if target and target != child:
                    graph_here[child].add(target)
        graphs[folder] = graph_here
    return graphs


def find_cycles(g):
    state, found, order = {}, [], []

    def walk(node, stack):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(g[node]):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                walk(dep, stack)
        stack.pop()
        state[node] = "done"
        order.append(node)

    for node in sorted(g):
        if node not in state:
            walk(node, [])
    return found, order


cycles, order = find_cycles(top_graph())
inner = []
for folder, g in sorted(sibling_graphs().items()):
    found, _ = find_cycles(g)
    where = os.path.relpath(folder, src)
    inner += [f"{where}: " + " -> ".join(c) for c in found]
if cycles or inner:
    for cycle in cycles:
        print("module cycle: " + " -> ".join(cycle))
    for cycle in inner:
        print("module cycle in " + cycle)
    sys.exit(1)
print("modules, each depending only on those before it: " + " ".join(order))
