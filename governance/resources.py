"""Where the data folders shipped with citygov (``schemas/``, ``policies/``) are found."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_folder(name: str) -> Path:
    """The shipped folder ``name``: inside the wheel, or at the repository root in a checkout."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"citygov data folder {name!r} is missing from this installation")
