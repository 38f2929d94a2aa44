"""The documentation against the repository: links that resolve, settings that exist.

- Every relative link in ``README.md``, ``deploy/README.md`` and ``docs/*.md`` names a file
  or directory that exists, and its ``#anchor`` (in a Markdown file) a heading of that file,
  slugged as GitHub slugs it, or an ``<a id>`` of it.
- ``docs/configuration.md`` lists every setting (YAML key, environment variable, default)
  and no other, in its tables and in its file of every key at its default.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.registry import SECTIONS
from streams.settings import SETTINGS, Setting

ROOT = Path(__file__).parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "deploy" / "README.md", *(ROOT / "docs").glob("*.md")])
CONFIGURATION = ROOT / "docs" / "configuration.md"
SETTINGS_HEADER = ["key", "environment variable", "default", "meaning"]


def known_settings() -> Sequence[Setting]:
    """Every setting the documentation must list: the shared ones and each warehouse's."""
    return (*SETTINGS, *(row for section in SECTIONS for row in section.settings))


# -- Markdown, as far as these tests need it ---------------------------------------------


def prose(text: str) -> Iterator[str]:
    """The lines of ``text`` outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def without_code_spans(line: str) -> str:
    return re.sub(r"(`+).*?\1", "", line)


#: an inline link or image: ](target) or ](<target> "title")
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(text: str) -> list[str]:
    """Targets of the inline links and images of ``text``, code left out."""
    return [target for line in prose(text) for target in LINK.findall(without_code_spans(line))]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lower-cased, punctuation but ``-`` and ``_``
    dropped, each space a ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown file: its headings' (repeats get -1, -2, …), its <a id>s."""
    seen: Counter[str] = Counter()
    found: set[str] = set()
    for line in prose(text):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
        found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return found


def test_slugs_follow_github() -> None:
    assert slug("6. Conflicts: the policies `retain` and `latest`") == (
        "6-conflicts-the-policies-retain-and-latest"
    )
    assert slug("Snowplow's enriched TSV") == "snowplows-enriched-tsv"
    assert slug("users_recognition") == "users_recognition"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in links(doc.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


# -- docs/configuration.md against the settings ------------------------------------------


def cells(row: str) -> list[str]:
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def unquoted(cell: str) -> str:
    return cell[1:-1] if len(cell) >= 2 and cell[0] == cell[-1] == "`" else cell


def settings_rows() -> list[dict[str, str]]:
    """The rows of every table of docs/configuration.md headed key, variable, default, …"""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in prose(CONFIGURATION.read_text()):
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = [cell.lower() for cell in cells(line)]
        elif header == SETTINGS_HEADER and not set(line) <= set("|-: "):
            rows.append(dict(zip(header, map(unquoted, cells(line)), strict=True)))
    return rows


def yaml_block_after(heading: str) -> dict[str, Any]:
    """The first YAML block below ``heading`` in docs/configuration.md, keys flattened."""
    text = CONFIGURATION.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None, heading
    return flatten(yaml.safe_load(block.group(1)))


def flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def is_default(setting: Setting, written: Any) -> bool:
    """Whether a value as the YAML file would hold it reads as the setting's default."""
    try:
        return bool(setting.parse(written) == setting.default)
    except ValueError:  # null, "": what the parser refuses stands for itself
        return bool(written == setting.default)


def test_configuration_lists_every_setting_once() -> None:
    documented = Counter(row["key"] for row in settings_rows())
    known = {setting.key for setting in known_settings()}
    assert set(documented) - known == set(), "documented, but no such setting"
    assert known - set(documented) == set(), "settings docs/configuration.md does not list"
    assert [key for key, n in documented.items() if n > 1] == []


def test_configuration_names_each_settings_variable_and_default() -> None:
    rows = {row["key"]: row for row in settings_rows()}
    for setting in known_settings():
        row = rows[setting.key]
        assert row["environment variable"] == (setting.env or "—"), setting.key
        assert is_default(setting, yaml.safe_load(row["default"])), (setting.key, row["default"])


def test_configuration_file_of_defaults_is_every_setting_at_its_default() -> None:
    written = yaml_block_after("A file with every key at its default")
    settings = {setting.key: setting for setting in known_settings()}
    assert sorted(written) == sorted(settings)
    for key, value in written.items():
        assert is_default(settings[key], value), (key, value)


def test_environment_variables_the_docs_name_are_settings() -> None:
    variables = {setting.env for setting in known_settings()}
    pattern = re.compile(r"\b(?:USER_RECOGNITION|KAFKA|RETROSTITCH)_[A-Z0-9_]+\b")
    unknown = {
        f"{doc.relative_to(ROOT)}: {name}"
        for doc in DOCS
        for name in pattern.findall(doc.read_text())
        if name not in variables
    }
    assert unknown == set()
