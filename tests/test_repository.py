"""The repository stands alone: its links resolve inside it, nothing cites material outside it, and
the API reference builds from the numpydoc docstrings with warnings as errors."""
from __future__ import annotations

import importlib
import json
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote


ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis",
             ".ipynb_checkpoints", ".benchmarks"}

# Markdown links and images: [text](target) / ![alt](target), an optional "title" after the target
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
HTML_ID = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")

# references that leave the repository: the directory above it, and the numbered lecture-note files
# (written as regular expressions, so that this file does not match them itself)
OUTSIDE = [re.compile(r"\.\./shared"), re.compile(r"\bseeds?\s+0\d\d\b", re.I), re.compile(r"\bseeds/")]


def _repository_files() -> list[Path]:
    """Every file of the repository: in a clone, git's tracked files and the new ones it does not ignore;
    else a walk of the tree."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, timeout=60, check=True)
        files = [ROOT / name for name in out.stdout.decode().split("\0") if name]
        return [f for f in files if f.is_file()]
    return [p for p in ROOT.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)
            and not any(part.endswith(".egg-info") for part in p.parts)]


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


def _markdown_sources() -> list[tuple[Path, str]]:
    """(file, Markdown text) of every *.md file and of every notebook's markdown cells."""
    sources = []
    for path in _repository_files():
        if path.suffix == ".md":
            sources.append((path, path.read_text(encoding="utf-8")))
        elif path.suffix == ".ipynb":
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            sources.append((path, "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")))
    return sources


def _links(markdown: str) -> list[str]:
    """The link targets of a Markdown text, outside code blocks and inline code."""
    prose = INLINE_CODE.sub("", FENCE.sub("", markdown))
    return LINK.findall(prose)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def _anchors(markdown: str) -> set[str]:
    return {_slug(h) for h in HEADING.findall(FENCE.sub("", markdown))} | set(HTML_ID.findall(markdown))


def test_markdown_sources_are_found():
    names = {path.relative_to(ROOT).as_posix() for path, _ in _markdown_sources()}
    assert {"README.md", "docs/derivation.md", "notebooks/01_forward.ipynb"} <= names


def _broken_links(path: Path, markdown: str) -> list[str]:
    """The relative links of `markdown` (the text of `path`) that leave the repository, name nothing
    in it, or name an anchor that a Markdown target lacks (a heading's slug or an `<a id>`)."""
    broken = []
    for target in _links(markdown):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}: ({target})"
        if not dest.is_relative_to(ROOT):
            broken.append(f"{where} leaves the repository")
        elif not dest.exists():
            broken.append(f"{where} does not exist")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in _anchors(dest.read_text(encoding="utf-8")):
            broken.append(f"{where} has no anchor #{anchor}")
    return broken


def test_every_relative_link_resolves_inside_the_repository():
    """Every relative link of every Markdown file and notebook markdown cell names a file or directory
    of the repository, and an anchor into a Markdown file names one of its headings or ids."""
    broken = [line for path, markdown in _markdown_sources() for line in _broken_links(path, markdown)]
    assert not broken, "\n".join(broken)


def test_links_are_checked():
    """The walker finds the links of the README and the notebooks, skips code, and rejects a link out of
    the repository, a missing file and a missing anchor."""
    links = dict((p.relative_to(ROOT).as_posix(), _links(md)) for p, md in _markdown_sources())
    assert any(t.startswith("docs/") for t in links["README.md"])
    assert any(t.startswith("../docs/") for t in links["notebooks/01_forward.ipynb"])
    assert _links("see [a](x.md#b) and `[c](y.md)`\n```\n[d](z.md)\n```\n") == ["x.md#b"]
    markdown = ("[a](../outside/x.md) [b](docs/missing.md) [c](docs/derivation.md#no-such-heading) "
                "[d](docs/derivation.md#references) [e](docs/derivation.md#eq-15) [f](https://example.org/x)")
    broken = _broken_links(ROOT / "x.md", markdown)
    assert [line.split("(")[1].split(")")[0] for line in broken] == [
        "../outside/x.md", "docs/missing.md", "docs/derivation.md#no-such-heading"]


def test_nothing_refers_outside_the_repository():
    """No file cites the directory above the repository or a numbered lecture-note file: the
    derivation is docs/derivation.md and the notes are cited there by author and title."""
    hits = []
    for path in _repository_files():
        text = _text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if any(p.search(line) for p in OUTSIDE):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)
    assert all(p.search(s) for p, s in zip(OUTSIDE, ["x ../" + "shared/y", "seed " + "004 eq. 1", "in seeds" + "/"]))


def _api_modules() -> list[str]:
    """Every module of fastbp, once: pdoc adds a package's submodules itself when they are in its
    `__all__` (or when it has none), and warns when one is named twice."""
    import fastbp
    names = ["fastbp"]
    for info in pkgutil.walk_packages(fastbp.__path__, "fastbp."):
        parent, _, leaf = info.name.rpartition(".")
        exported = getattr(importlib.import_module(parent), "__all__", None)
        if exported is not None and leaf not in exported:
            names.append(info.name)
    return names


def test_api_reference_builds_without_warnings(tmp_path):
    """`python -W error -m pdoc ...`: the API reference of every module, from the numpydoc docstrings;
    any warning (a module that fails to import, a docstring pdoc cannot read) fails the build."""
    modules = _api_modules()
    assert {"fastbp.model", "fastbp.kernels.dense"} <= set(modules)
    run = subprocess.run([sys.executable, "-W", "error", "-m", "pdoc", "--docformat", "numpy", *modules,
                          "-o", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Warning" not in run.stderr, run.stderr[-3000:]
    assert (tmp_path / "fastbp.html").is_file()
    pages = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.html")}
    assert {"fastbp/model.html", "fastbp/kernels/dense.html"} <= pages
    assert "dense_forward" in (tmp_path / "fastbp" / "kernels" / "dense.html").read_text(encoding="utf-8")


def test_readme_test_command_is_what_ci_runs():
    """The README's command that installs and runs the tests is the last line of `.ci/run`, verbatim."""
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()][-1]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pytest" in ci and f"```bash\n{ci}\n```" in readme
