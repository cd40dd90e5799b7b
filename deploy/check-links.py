#!/usr/bin/env python3
"""`make lint`: every relative link in README.md and docs/*.md resolves.

A link `[text](path)` or `[text](path#anchor)` must name a file of the
repository, and an anchor must name a heading of the Markdown file it points
into (GitHub's slugs: lower case, punctuation dropped, spaces to `-`, `-1`,
`-2` … for repeats). Links inside code (fenced blocks, `inline`) and inside
HTML comments are not links and are skipped; http(s) and mailto links are
not checked (the machine may be offline). Prints one line per broken link
and exits 1 when there is any.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


def prose(text):
    """The text with code and HTML comments blanked out, lines kept."""
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))
    text = re.sub(r"<!--.*?-->", blank, text, flags=re.S)
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", blank, text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", blank, text)


def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path):
    seen = {}
    out = set()
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", path.read_text(), flags=re.S | re.M)
    for m in re.finditer(r"^#{1,6} (.+?)\s*#*$", text, flags=re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def check(md):
    broken = []
    text = prose(md.read_text())
    for lineno, line in enumerate(text.split("\n"), 1):
        for m in LINK.finditer(line):
            target = m.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            where = f"{md.relative_to(ROOT)}:{lineno}: {target}"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif ROOT not in dest.parents and dest != ROOT:
                broken.append(f"{where}: outside the repository")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where}: no heading with the anchor #{anchor}")
    return broken


def main():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    broken = [b for f in files for b in check(f)]
    for b in broken:
        print(f"check-links: {b}", file=sys.stderr)
    print(f"check-links: {len(files)} files, {len(broken)} broken link(s)", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
