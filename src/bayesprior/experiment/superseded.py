"""Setting aside outputs made with settings changed since: moved under ``superseded/``, never deleted."""
from __future__ import annotations

import os
from pathlib import Path


def set_aside(out: Path, name: str, digest: str, paths: dict[str, Path] | Path) -> Path:
    """Move `paths` (new name -> path, those that exist), or one folder, to ``<out>/superseded/<name>.<digest
    head>/`` (``.2``, ``.3``, ... after it when that exists); return that folder."""
    folder = out / "superseded" / f"{name}.{digest[:12]}"
    k = 1
    while folder.exists():
        k += 1
        folder = out / "superseded" / f"{name}.{digest[:12]}.{k}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(paths, Path):
        os.replace(paths, folder)
        return folder
    folder.mkdir()
    for new_name, old in paths.items():
        if old.exists():
            os.replace(old, folder / new_name)
    return folder
