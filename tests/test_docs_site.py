"""The documentation: README.md is a front page (at most 250 lines) whose links and anchors into
docs/ resolve, and the site of mkdocs.yml builds with ``mkdocs build --strict`` (requirements-dev.txt),
where a broken link or anchor is an error (shown on a page made broken on purpose)."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], check=False, capture_output=True, text=True, timeout=120)


def heading_anchors(page: Path) -> set[str]:
    """The anchors mkdocs gives the headings of ``page`` (its toc extension's slugify)."""
    from markdown.extensions.toc import slugify
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    headings = re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.MULTILINE)
    return {slugify(heading.group(1).replace("`", "").strip(), "-") for heading in headings}


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    headings = [line for line in lines if line.startswith("## ")]
    for needed in ("## The two commands", "## Quick start", "## Headline numbers", "## Layout"):
        assert needed in headings, (needed, headings)


def test_readme_links_resolve():
    pytest.importorskip("markdown", reason="mkdocs (requirements-dev.txt) brings markdown")
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert sum(link.startswith("docs/") for link in links) >= 8
    for link in links:
        if re.match(r"^[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        assert (ROOT / target).exists(), f"README.md links to a missing file: {link}"
        if anchor:
            assert anchor in heading_anchors(ROOT / target), f"README.md links to a missing anchor: {link}"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs comes from requirements-dev.txt (make test)")
    built = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "serving" / "index.html").is_file()


def test_a_broken_anchor_fails_the_strict_build(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs comes from requirements-dev.txt (make test)")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    config = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {tmp_path / 'docs'}")
    (tmp_path / "mkdocs.yml").write_text(config)
    page = tmp_path / "docs" / "faithfulness.md"
    page.write_text(page.read_text() + "\nSee [nothing](serving.md#no-such-heading).\n")
    built = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0 and "no-such-heading" in built.stdout + built.stderr
