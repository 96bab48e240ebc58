"""Policy bundles: the Rego modules and data documents that decide, under one content hash.

The **revision** is a SHA-256 over every file that can change a decision: the Rego modules (tests
excluded), the data documents under ``data/`` as written, and ``generated/datasets.json`` — the dataset
classification derived from ``schemas/`` (``governance.catalog``) when the bundle is loaded from a
folder. A stored bundle keeps that generated file, so an old revision decides exactly as it did even
after the schemas moved on.

Data-sharing agreements are also kept in a register in the database (``governance.sharing``): the
bundle's ``data/agreements.json`` is then the folder's document overlaid by the register's agreements
(:func:`overlay_agreements`; a revoked agreement is removed), so every change to the register is a new
revision and decisions made under it stay replayable.

Bundles are kept content-addressed on disk: ``<data_dir>/policy-bundles/<revision>/`` holds the files at
their relative paths plus ``manifest.json``; loading a revision re-hashes the files and refuses a bundle
that does not match its name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import rfc8785

from governance.catalog import SchemaCatalog, default_catalog
from governance.config import Settings
from governance.policy.documents import check_documents
from governance.policy.errors import PolicyBundleError, UnknownRevisionError
from governance.policy.lint import lint_module
from governance.policy.model import Stage
from governance.resources import data_folder

log = logging.getLogger(__name__)

FORMAT = "citygov-policy-bundle/1"
DATA_ROOT = "city"
"""Data documents are merged under ``data.city``; policies live under ``data.citygov.<stage>``."""
GENERATED_DATASETS = "generated/datasets.json"
MANIFEST = "manifest.json"
AGREEMENTS_DOCUMENT = "data/agreements.json"

AgreementOverlay = Mapping[str, Mapping[str, Any] | None]
"""Agreements by id to put over the folder's: a document replaces (or adds) one, ``None`` removes one."""


def entrypoint(stage: Stage) -> str:
    """The rule every stage package must define: ``data.citygov.<stage>.decision``."""
    return f"citygov/{stage.value}/decision"


@dataclass(frozen=True)
class PolicyBundle:
    """The files of one revision and the data document compiled from them."""

    revision: str
    files: Mapping[str, bytes] = field(repr=False)
    data: Mapping[str, Any] = field(repr=False)
    origin: str = ""

    @property
    def short(self) -> str:
        return self.revision[:12]

    @property
    def modules(self) -> dict[str, str]:
        """Rego modules by relative path (tests are never part of a bundle)."""
        return {p: b.decode("utf-8") for p, b in self.files.items() if p.endswith(".rego")}

    def write(self, directory: Path) -> None:
        """Write the files and ``manifest.json`` into ``directory`` (created; must be empty or absent)."""
        directory.mkdir(parents=True, exist_ok=True)
        for path, content in self.files.items():
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        manifest = {"format": FORMAT, "revision": self.revision,
                    "files": {p: hashlib.sha256(b).hexdigest() for p, b in sorted(self.files.items())}}
        (directory / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def compute_revision(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256(FORMAT.encode() + b"\n")
    for path in sorted(files):
        digest.update(path.encode("utf-8") + b"\0" + hashlib.sha256(files[path]).hexdigest().encode() + b"\n")
    return digest.hexdigest()


def bundle_from_files(files: Mapping[str, bytes], *, origin: str) -> PolicyBundle:
    """Check and assemble a bundle from its files (relative path → bytes)."""
    problems: list[str] = []
    for path, content in sorted(files.items()):
        if path.endswith("_test.rego"):
            problems.append(f"{path}: tests do not belong in a bundle")
        elif path.endswith(".rego"):
            try:
                problems.extend(lint_module(path, content.decode("utf-8")))
            except UnicodeDecodeError:
                problems.append(f"{path}: not UTF-8")
        elif not (path.startswith("data/") or path.startswith("generated/")) or not path.endswith(".json"):
            problems.append(f"{path}: a bundle holds only *.rego, data/*.json and generated/*.json")
    if problems:
        raise PolicyBundleError("policy bundle refused:\n  " + "\n  ".join(problems))
    city: dict[str, Any] = {}
    for path in sorted(p for p in files if p.endswith(".json")):
        try:
            document = orjson.loads(files[path])
        except orjson.JSONDecodeError as exc:
            raise PolicyBundleError(f"data document {path} is not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise PolicyBundleError(f"data document {path} must be a JSON object (its keys go under data.city)")
        for key, value in document.items():
            if key in city:
                raise PolicyBundleError(f"data document {path}: key {key!r} is already defined by another document")
            city[key] = value
    if "datasets" not in city:
        raise PolicyBundleError("policy bundle has no data.city.datasets document")
    check_documents(city)
    if not any(p.endswith(".rego") for p in files):
        raise PolicyBundleError("policy bundle has no Rego modules")
    return PolicyBundle(compute_revision(files), dict(files), {DATA_ROOT: city}, origin)


def datasets_document(catalog: SchemaCatalog) -> dict[str, Any]:
    """``data.city.datasets``, generated from the schemas' ``x-citygov`` and ``x-classification`` metadata."""
    datasets: dict[str, dict[str, Any]] = {}
    for entity_type in catalog.types():
        schema = catalog.get(entity_type)
        entry = datasets.setdefault(schema.dataset, {
            "module": schema.module, "entity_types": [], "subject_property": schema.subject_property,
            "observed_at": schema.observed_at, "fields": {},
        })
        if entry["module"] != schema.module or entry["subject_property"] != schema.subject_property:
            raise PolicyBundleError(f"dataset {schema.dataset}: its entity types disagree on module or subject")
        entry["entity_types"].append(entity_type)
        for name, level in schema.classification.items():
            known = entry["fields"].get(name)
            if known is None or _RANK[level.value] > _RANK[known]:
                entry["fields"][name] = level.value
    return {"datasets": datasets}


_RANK = {"public": 0, "internal": 1, "personal": 2, "special-category": 3}


def folder_files(folder: Path, catalog: SchemaCatalog | None = None) -> dict[str, bytes]:
    """The files of the policies folder that make a bundle, plus the generated dataset classification."""
    if not folder.is_dir():
        raise PolicyBundleError(f"policies folder {folder} does not exist")
    files: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*.rego")):
        relative = path.relative_to(folder).as_posix()
        if not relative.endswith("_test.rego"):
            files[relative] = path.read_bytes()
    for path in sorted((folder / "data").glob("*.json")):
        files[f"data/{path.name}"] = path.read_bytes()
    files[GENERATED_DATASETS] = rfc8785.dumps(datasets_document(catalog or default_catalog()))
    return files


def overlay_agreements(files: Mapping[str, bytes], agreements: AgreementOverlay) -> dict[str, bytes]:
    """``files`` with ``data/agreements.json`` holding the file's agreements overlaid by ``agreements``.

    Without entries the files come back unchanged (the revision stays what it was); with any, the
    document is rewritten as canonical JSON (RFC 8785), so equal registers give equal revisions.
    """
    out = dict(files)
    if not agreements:
        return out
    document: dict[str, Any] = {}
    raw = files.get(AGREEMENTS_DOCUMENT)
    if raw is not None:
        try:
            loaded = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise PolicyBundleError(f"data document {AGREEMENTS_DOCUMENT} is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict) or not isinstance(loaded.get("agreements", {}), dict):
            raise PolicyBundleError(f"data document {AGREEMENTS_DOCUMENT} must hold an 'agreements' object")
        document = loaded
    merged: dict[str, Any] = dict(document.get("agreements", {}))
    for agreement_id, entry in agreements.items():
        if entry is None:
            merged.pop(agreement_id, None)
        else:
            merged[agreement_id] = dict(entry)
    document["agreements"] = merged
    out[AGREEMENTS_DOCUMENT] = rfc8785.dumps(document)
    return out


def base_files(settings: Settings, catalog: SchemaCatalog | None = None) -> dict[str, bytes]:
    """The files decisions start from: the pinned stored revision's, or the policies folder's."""
    if settings.policy_revision:
        return dict(BundleStore.for_settings(settings).load(settings.policy_revision).files)
    return folder_files(settings.policy_dir or data_folder("policies"), catalog)


def rego_test_modules(folder: Path) -> dict[str, str]:
    """Every ``*_test.rego`` under the policies folder, by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_text("utf-8") for p in sorted(folder.rglob("*_test.rego"))}


def load_folder(folder: Path | None = None, catalog: SchemaCatalog | None = None) -> PolicyBundle:
    """The bundle of a policies folder (default: the shipped ``policies/``)."""
    folder = folder or data_folder("policies")
    return bundle_from_files(folder_files(folder, catalog), origin=str(folder))


class BundleStore:
    """Content-addressed bundles under one directory: ``<root>/<revision>/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_settings(cls, settings: Settings) -> BundleStore:
        return cls(settings.data_dir / "policy-bundles")

    def path(self, revision: str) -> Path:
        if len(revision) != 64 or any(c not in "0123456789abcdef" for c in revision):
            raise UnknownRevisionError(f"{revision!r} is not a policy revision (64 hex digits)")
        return self.root / revision

    def save(self, bundle: PolicyBundle) -> Path:
        """Store ``bundle`` once (atomic: written aside, then renamed into place)."""
        target = self.path(bundle.revision)
        if (target / MANIFEST).is_file():
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            bundle.write(staging)
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / MANIFEST).is_file():  # not a concurrent writer of the same revision
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def load(self, revision: str) -> PolicyBundle:
        """A stored revision, verified against its name."""
        return load_bundle_dir(self.path(revision), expect=revision)

    def revisions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())


def load_bundle_dir(directory: Path, *, expect: str | None = None) -> PolicyBundle:
    """Read a bundle directory written by :meth:`PolicyBundle.write`; check every file's hash."""
    try:
        manifest = orjson.loads((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise UnknownRevisionError(f"no policy bundle at {directory}") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise PolicyBundleError(f"policy bundle manifest {directory / MANIFEST} unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PolicyBundleError(f"{directory / MANIFEST} is not a {FORMAT} manifest")
    files: dict[str, bytes] = {}
    for path, digest in dict(manifest.get("files", {})).items():
        target = (directory / path).resolve()
        if directory.resolve() not in target.parents:
            raise PolicyBundleError(f"policy bundle {directory}: path {path!r} leaves the bundle")
        content = target.read_bytes()
        if hashlib.sha256(content).hexdigest() != digest:
            raise PolicyBundleError(f"policy bundle {directory}: {path} does not match its manifest hash")
        files[path] = content
    bundle = bundle_from_files(files, origin=str(directory))
    for claimed in (manifest.get("revision"), expect):
        if claimed is not None and claimed != bundle.revision:
            raise PolicyBundleError(
                f"policy bundle {directory} hashes to {bundle.short}, not {str(claimed)[:12]}: it was altered"
            )
    return bundle


def active_bundle(
    settings: Settings,
    catalog: SchemaCatalog | None = None,
    *,
    store: bool = True,
    agreements: AgreementOverlay | None = None,
) -> PolicyBundle:
    """The bundle that decides: a pinned stored revision, or the policies folder (then stored).

    ``agreements`` (the database register, see :func:`overlay_agreements`) go over the agreements of
    either; the result is a revision of its own, stored like any other.
    """
    bundles = BundleStore.for_settings(settings)
    if settings.policy_revision:
        pinned = bundles.load(settings.policy_revision)
        if not agreements:
            return pinned
        bundle = bundle_from_files(overlay_agreements(pinned.files, agreements),
                                   origin=f"{pinned.origin} + agreements register")
    elif agreements:
        folder = settings.policy_dir or data_folder("policies")
        bundle = bundle_from_files(overlay_agreements(folder_files(folder, catalog), agreements),
                                   origin=f"{folder} + agreements register")
    else:
        bundle = load_folder(settings.policy_dir, catalog)
    if store:
        try:
            bundles.save(bundle)
        except OSError as exc:
            raise PolicyBundleError(
                f"cannot keep policy revision {bundle.short} under {bundles.root} ({exc}); decisions made with "
                "it could not be replayed"
            ) from exc
    return bundle
