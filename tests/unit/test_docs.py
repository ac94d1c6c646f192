"""The manual stays true: every generated block and file is current, every relative link and
anchor in README.md and docs/ leads somewhere, and the README stays a front page."""

from __future__ import annotations

from pathlib import Path

from slipway import PROJECT_DIR, docs


def test_every_generated_text_is_current():
    assert docs.stale() == [], "run `make docs`"


def test_every_relative_link_and_anchor_leads_somewhere():
    assert docs.broken_links() == []


def test_a_broken_link_or_anchor_is_found(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` section: twice\n\n## A `code` section: twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[fine](other.md#a-code-section-twice) [fine too](other.md#a-code-section-twice-1) "
        "[here](#page) [web](https://example.com/x)\n"
        "[gone](missing.md) [no anchor](other.md#nothing) [not here](#nowhere)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    broken = [link.split(": ", 1)[1] for link in docs.broken_links([page])]
    assert broken == ["missing.md", "other.md#nothing", "#nowhere"]


def test_the_readme_is_a_front_page_with_the_two_commands():
    text = (PROJECT_DIR / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    first_screen = "\n".join(text.splitlines()[:25])
    assert "make demo" in first_screen and "make test" in first_screen
    for page in sorted((PROJECT_DIR / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in text, f"the README does not link {page.name}"


def test_a_block_without_its_markers_is_named(tmp_path: Path, monkeypatch):
    page = tmp_path / "settings.md"
    page.write_text("# Settings\n\nno markers\n")
    monkeypatch.setattr(docs, "FILES", {})
    monkeypatch.setattr(docs, "BLOCKS", {page: {"generated:settings": docs.settings_table}})
    monkeypatch.setattr(docs, "PROJECT_DIR", tmp_path)
    assert docs.stale() == ["settings.md (settings.md must hold <!-- generated:settings:start --> and :end once each)"]


def test_no_test_module_imports_another():
    # docs/testing.md: what tests share lives in slipway/harness.py or a package's helper module
    import re

    from slipway import PROJECT_DIR

    found = [
        f"{path.relative_to(PROJECT_DIR)}: {line.strip()}"
        for path in sorted((PROJECT_DIR / "tests").rglob("*.py"))
        for line in path.read_text().splitlines()
        if re.match(r"\s*(from tests(\.\w+)*\.test_\w+ import|import tests(\.\w+)*\.test_)", line)
    ]
    assert found == []
