"""Templates as files: one `<key>/template.json` per template, read to import, written to export.

A file holds the document exactly as POST /templates takes it, so templates can live in a
repository, be reviewed like code, and be loaded into any store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from common.errors import Conflict, ValidationError
from common.templates.document import validate_document
from common.templates.store import TemplateStore, TemplateVersion

TEMPLATE_FILE = "template.json"
CREATED, UPDATED, UNCHANGED, ARCHIVED = "created", "updated", "unchanged", "archived"
# Another process may import the same folder at the same moment (two runners starting): a
# write that loses the race is decided again from what the winner wrote.
IMPORT_ATTEMPTS = 3


def read_directory(path: str | Path) -> list[dict]:
    """The validated document of every `<key>/template.json` under `path`, sorted by key.

    A ValidationError names the first bad file and what is wrong with it."""
    root = Path(path)
    if not root.is_dir():
        raise ValidationError(f"{root}: not a directory")
    documents = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        documents.append(read_file(folder / TEMPLATE_FILE))
    return documents


def read_file(file: Path) -> dict:
    """One template file, validated; its folder's name must be its key."""
    try:
        body = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(f"{file}: missing (each folder holds one {TEMPLATE_FILE})") from None
    except UnicodeDecodeError:
        raise ValidationError(f"{file}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ValidationError(
            f"{file}: not JSON ({error.msg}, line {error.lineno} column {error.colno})"
        ) from None
    except OSError as error:
        raise ValidationError(f"{file}: cannot be read ({error.strerror})") from None
    try:
        document = validate_document(body)
    except ValidationError as error:
        raise ValidationError(f"{file}: {error.message}", error.fields) from None
    if document["key"] != file.parent.name:
        raise ValidationError(
            f"{file}: the key {document['key']!r} differs from its folder's name",
            {"key": f"must be {file.parent.name!r}, the folder's name"},
        )
    return document


def write_directory(path: str | Path, versions: Iterable[TemplateVersion]) -> list[Path]:
    """Write each version's document to `<path>/<key>/template.json`; the files written."""
    root = Path(path)
    written = []
    for version in versions:
        file = root / version.key / TEMPLATE_FILE
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(_canonical(version.document, indent=2) + "\n", encoding="utf-8")
        written.append(file)
    return written


def import_documents(
    store: TemplateStore, documents: Iterable[Any], now: datetime
) -> list[tuple[str, str]]:
    """Save each document that differs from its key's latest version: (key, what happened),
    one of created, updated, unchanged, archived. An archived key is left alone: reviving it
    is a decision for POST /templates, not a side effect of deploying files."""
    outcomes = []
    for body in documents:
        document = validate_document(body)
        outcomes.append((document["key"], _import_one(store, document, now)))
    return outcomes


def _import_one(store: TemplateStore, document: dict, now: datetime) -> str:
    attempts_left = IMPORT_ATTEMPTS
    while True:
        try:
            return _write_if_changed(store, document, now)
        except Conflict:
            attempts_left -= 1
            if not attempts_left:
                raise


def _write_if_changed(store: TemplateStore, document: dict, now: datetime) -> str:
    key = document["key"]
    latest = store.latest(key)
    if latest is None:
        store.create(key, document, now)
        return CREATED
    if latest.archived:
        return ARCHIVED
    if _canonical(latest.document) == _canonical(document):
        return UNCHANGED
    store.add_version(key, document, now)
    return UPDATED


def _canonical(document: Any, indent: int | None = None) -> str:
    # Compared as JSON text, not as dicts: in Python 1 == 1.0 == True, in a schema they differ.
    return json.dumps(document, indent=indent, sort_keys=True, ensure_ascii=False)
