# SPDX-License-Identifier: Apache-2.0
"""The reference UI's files, without a browser: vendored libraries as recorded, nothing remote, strings complete.

The kiosk loads nothing from the network, so every library is vendored from
npm with its licence, and ``VENDORED.md`` records name, version, licence,
tarball, integrity and the SHA-256 of each file kept; a changed, added or
unrecorded vendored file fails here. Every string the screen shows has a
Chinese and an English form (``js/i18n.js``), and every key the code asks
for exists.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from agent.sessions.catalogue import STEP_KINDS
from agent.sessions.engine import UNAVAILABLE_REASONS
from hal.sim.idcard import SAMPLE_KINDS

UI = Path(__file__).resolve().parents[2] / "agent" / "localapi" / "ui"
VENDOR = UI / "vendor"
RECORD = UI / "VENDORED.md"

# -- VENDORED.md -------------------------------------------------------------------


def _table(heading: str) -> list[list[str]]:
    """The rows (header dropped) of the first Markdown table after ``heading`` in VENDORED.md."""
    text = RECORD.read_text(encoding="utf-8")
    rows: list[list[str]] = []
    for line in text[text.index(heading):].splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not set("".join(cells)) <= set("-: "):   # not the |---| line
            rows.append(cells)
    return rows[1:]


PACKAGES = _table("# Vendored")
FILES = _table("## Files")


def test_the_record_lists_packages_and_files() -> None:
    assert PACKAGES, "VENDORED.md lists no package"
    assert FILES, "VENDORED.md lists no file"


@pytest.mark.parametrize("row", PACKAGES, ids=[r[0] for r in PACKAGES])
def test_each_vendored_package_is_as_recorded(row: list[str]) -> None:
    name, version, licence, tarball, integrity = row
    folder = VENDOR / f"{name}@{version}"
    assert folder.is_dir(), f"vendor/{name}@{version} is missing"
    meta = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    assert (meta["name"], meta["version"], meta["license"]) == (name, version, licence)
    licence_text = (folder / "LICENSE").read_text(encoding="utf-8")
    assert f"{licence} License" in licence_text and "Permission is hereby granted" in licence_text
    assert tarball == f"https://registry.npmjs.org/{name}/-/{name.split('/')[-1]}-{version}.tgz"
    assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", integrity), integrity


def test_every_vendored_file_is_recorded_with_its_hash() -> None:
    recorded = dict(FILES)
    present = {str(p.relative_to(UI)) for p in VENDOR.rglob("*") if p.is_file()}
    assert present == set(recorded), f"unrecorded: {present - set(recorded)}; missing: {set(recorded) - present}"
    for path, digest in recorded.items():
        assert hashlib.sha256((UI / path).read_bytes()).hexdigest() == digest, f"{path} changed since vendoring"


def test_every_vendor_folder_is_a_recorded_package() -> None:
    folders = {p.name for p in VENDOR.iterdir() if p.is_dir()}
    assert folders == {f"{name}@{version}" for name, version, *_ in PACKAGES}


# -- nothing remote ------------------------------------------------------------------

# Text that never loads anything: comments, and XML namespace names in SVG.
_COMMENTS = re.compile(r"/\*.*?\*/|<!--.*?-->|^\s*//[^\n]*", re.S | re.M)
_NAMESPACE = re.compile(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"')
_URL = re.compile(r"\b(?:https?|wss?)://[^\s\"'`)<>]+", re.I)
_LOCAL = re.compile(r"(?:https?|wss?)://(?:127\.0\.0\.1|localhost)(?::\d+)?(?:/|$)", re.I)
# Files that are records, not loaded by the page.
_RECORDS = {"VENDORED.md", "LICENSE", "package.json"}


def remote_urls(text: str) -> list[str]:
    """Absolute URLs outside the local origin in ``text``, ignoring comments and SVG namespaces."""
    code = _NAMESPACE.sub("", _COMMENTS.sub("", text))
    return [url for url in _URL.findall(code) if not _LOCAL.match(url)]


def test_the_url_check_finds_what_a_cdn_would_look_like() -> None:
    page = ('<script src="https://cdn.jsdelivr.net/npm/x"></script>\n'
            '/* https://github.com/ok-in-a-comment */ import x from "https://esm.sh/x";\n'
            '<svg xmlns="http://www.w3.org/2000/svg"></svg><img src="http://127.0.0.1:5846/a.png">\n'
            'body { background: url(http://example.com/a.png) }')
    assert remote_urls(page) == ["https://cdn.jsdelivr.net/npm/x", "https://esm.sh/x", "http://example.com/a.png"]


def test_no_file_loads_anything_from_outside_the_kiosk() -> None:
    found = {}
    for path in UI.rglob("*"):
        if path.is_file() and path.name not in _RECORDS:
            urls = remote_urls(path.read_text(encoding="utf-8"))
            if urls:
                found[str(path.relative_to(UI))] = urls
    assert not found, f"remote URLs in the UI: {found}"


def test_every_local_reference_resolves() -> None:
    html = (UI / "index.html").read_text(encoding="utf-8")
    refs = [(UI, ref) for ref in re.findall(r'(?:src|href)="([^"#?]+)"', html)]
    for js in (UI / "js").glob("*.js"):
        text = js.read_text(encoding="utf-8")
        refs += [(js.parent, ref) for ref in re.findall(r'^import .*? from "([^"]+)";', text, re.M)]
        refs += [(UI, ref) for ref in re.findall(r'"(img/[\w.-]+\.svg)"', text)]
    assert refs
    missing = [f"{base.name}: {ref}" for base, ref in refs if not (base / ref).resolve().is_file()]
    assert not missing, missing


def test_the_page_keeps_nothing_and_logs_nothing() -> None:
    # Storage would outlive the citizen; console output may carry payloads.
    for js in (UI / "js").glob("*.js"):
        code = _COMMENTS.sub("", js.read_text(encoding="utf-8"))
        for word in ("localStorage", "sessionStorage", "document.cookie", "indexedDB", "console."):
            assert word not in code, f"{js.name} uses {word}"


# -- strings -------------------------------------------------------------------------

def load_strings() -> dict[str, dict[str, str]]:
    text = (UI / "js" / "i18n.js").read_text(encoding="utf-8")
    match = re.search(r"^export const STRINGS = (\{.*?^\});$", text, re.S | re.M)
    assert match, "js/i18n.js: `export const STRINGS = {...};` not found"
    strings: dict[str, dict[str, str]] = json.loads(match.group(1))
    return strings


STRINGS = load_strings()


def test_every_string_has_chinese_and_english_with_the_same_placeholders() -> None:
    for key, forms in STRINGS.items():
        assert set(forms) == {"zh", "en"}, f"{key}: {sorted(forms)}"
        assert forms["zh"].strip() and forms["en"].strip(), f"{key} has an empty form"
        zh, en = (set(re.findall(r"\{(\w+)\}", forms[lang])) for lang in ("zh", "en"))
        assert zh == en, f"{key}: placeholders differ: zh {zh}, en {en}"


def test_every_key_the_code_asks_for_exists() -> None:
    asked = set()
    for js in (UI / "js").glob("*.js"):
        asked |= set(re.findall(r'\bt\("([\w.]+)"', js.read_text(encoding="utf-8")))
    assert asked, "no t(...) call found: the pattern is stale"
    # Keys kept in variables first (notices, error tables): any literal shaped like a key of a known family.
    families = {key.split(".")[0] for key in STRINGS}
    for js in (UI / "js").glob("*.js"):
        if js.name != "i18n.js":
            literals = re.findall(r'"([a-z_]+(?:\.[A-Za-z_]+)+)"', js.read_text(encoding="utf-8"))
            asked |= {lit for lit in literals if lit.split(".")[0] in families}
    assert not asked - set(STRINGS), f"keys missing from i18n.js: {sorted(asked - set(STRINGS))}"


def test_keys_built_from_agent_vocabulary_exist() -> None:
    # The screen builds these from what the agent sends: each value it may send needs its text.
    needed = {f"step.name.{kind}" for kind in STEP_KINDS}
    needed |= {f"reason.{reason}" for reason in UNAVAILABLE_REASONS}
    needed |= {f"card.type.{kind}" for kind in SAMPLE_KINDS}
    needed |= {f"card.rejected.{why}" for why in ("unreadable", "check_character")}
    needed |= {f"receipt.{status}" for status in ("printed", "failed", "skipped")}
    needed |= {f"mode.{mode}.{part}" for mode in ("maintenance", "out_of_service") for part in ("heading", "body")}
    assert not needed - set(STRINGS), f"missing: {sorted(needed - set(STRINGS))}"


def test_button_names_are_unique_per_language() -> None:
    # Tests and screen readers find buttons by name: two buttons with one name are ambiguous.
    buttons = [key for key in STRINGS if key.startswith("btn.")]
    for lang in ("zh", "en"):
        names = [STRINGS[key][lang] for key in buttons]
        assert len(names) == len(set(names)), f"{lang}: duplicate button names {names}"
