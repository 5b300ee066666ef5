#!/usr/bin/env python3
"""Checks the docs: README.md and the book in docs/src.

- Every relative link resolves: the file exists, and an `#anchor` names a heading of the page it points to (slugs
  as mdBook and GitHub make them).
- SUMMARY.md lists every page of the book, and every page it lists exists.
- Every code block fenced as ```sh run is run, line by line, from the repository's root, with `ruprompts` on PATH
  (target/debug, or the folder of $RUPROMPTS_BIN): each command must succeed. Such blocks hold commands against
  the bundled models, so the docs' examples cannot rot.

Exit 1 with each problem listed, else 0. CI runs it after the tests: `python3 scripts/check-docs.py`.
"""
import os
import re
import subprocess
import sys

root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
book = os.path.join(root, "docs", "src")
pages = [os.path.join(root, "README.md")] + sorted(
    os.path.join(book, n) for n in os.listdir(book) if n.endswith(".md")
)
problems = []


def prose(text):
    """The text outside fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading):
    heading = re.sub(r"`|\*|_(?=\w)", "", heading.strip()).lower()
    return "".join(c for c in heading.replace(" ", "-") if c.isalnum() or c in "-_")


def anchors(path):
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"^```.*?^```", "", f.read(), flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


for page in pages:
    with open(page, encoding="utf-8") as f:
        text = f.read()
    where = os.path.relpath(page, root)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(text)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(resolved):
            problems.append(f"{where}: link to {target}: no such file")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            problems.append(f"{where}: link to {target}: no heading #{anchor} there")

with open(os.path.join(book, "SUMMARY.md"), encoding="utf-8") as f:
    listed = set(re.findall(r"\]\(([^)]+\.md)\)", f.read()))
for page in pages[1:]:
    name = os.path.basename(page)
    if name != "SUMMARY.md" and name not in listed:
        problems.append(f"docs/src/{name} is not in SUMMARY.md")
for name in listed:
    if not os.path.isfile(os.path.join(book, name)):
        problems.append(f"SUMMARY.md lists {name}, which does not exist")

binary = os.environ.get("RUPROMPTS_BIN", os.path.join(root, "target", "debug", "ruprompts"))
env = dict(os.environ, PATH=os.path.dirname(os.path.abspath(binary)) + os.pathsep + os.environ["PATH"])
for page in pages:
    with open(page, encoding="utf-8") as f:
        text = f.read()
    for block in re.findall(r"^```sh run\n(.*?)^```", text, flags=re.S | re.M):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = command.strip()
            if not command or command.startswith("#"):
                continue
            print(f"{os.path.relpath(page, root)}: {command}", flush=True)
            try:
                run = subprocess.run(["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True,
                                     timeout=600)
                if run.returncode != 0:
                    problems.append(f"{os.path.relpath(page, root)}: `{command}` failed: {run.stderr.strip()[-500:]}")
            except subprocess.TimeoutExpired:
                problems.append(f"{os.path.relpath(page, root)}: `{command}` ran past 600 s")

for p in problems:
    print("docs: " + p)
sys.exit(1 if problems else 0)
