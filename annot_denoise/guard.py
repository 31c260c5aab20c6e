"""Keep every write out of the folders a job reads: the input scans are never touched.

Checking folder *names* is not enough: a folder inside the output can be a
symbolic link into the input tree, or the input can be bind-mounted under the
output, and then ``OUT/sub/a.png`` is ``INPUT/sub/a.png``. A :class:`WriteGuard`
knows the input folders by identity (device and inode, what the kernel compares),
and :func:`annot_denoise.io.atomic_write_bytes` checks the folder it actually
opened for writing against them, so no path spelling, link or mount gets a
write into the input tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

Identity = tuple[int, int]


class UnsafeOutputError(Exception):
    """A write that would land inside a folder the job reads from."""


def identity(info: os.stat_result) -> Identity:
    return info.st_dev, info.st_ino


def _identity_of(path: Path) -> Identity | None:
    """The identity of what ``path`` leads to, or None (nothing there, a dangling link)."""
    try:
        return identity(path.stat())
    except OSError:
        return None


@dataclass(frozen=True)
class WriteGuard:
    """The folders (``dirs``) no write may enter and the files (``files``) no
    output may be: identities of the whole input tree and of every input file."""

    dirs: frozenset[Identity] = field(default_factory=frozenset)
    files: frozenset[Identity] = field(default_factory=frozenset)
    names: tuple[str, ...] = ()  # the protected roots, for messages

    @classmethod
    def protecting(cls, folders: Iterable[Path | str], files: Iterable[Path] = ()) -> WriteGuard:
        """Protect every folder under each of ``folders`` and the given files (links
        are followed: a linked scan protects its target)."""
        folders = [Path(f) for f in folders]
        dirs: set[Identity | None] = set()
        for top in folders:
            dirs.add(identity(top.stat()))
            for dirpath, dirnames, _ in os.walk(top):
                # Linked folders are not walked (nor listed as inputs), but are protected.
                dirs.update(_identity_of(Path(dirpath) / name) for name in dirnames)
        ids = {_identity_of(Path(path)) for path in files}  # unreadable: fails when read
        return cls(frozenset(dirs - {None}), frozenset(ids - {None}), tuple(map(str, folders)))

    def _where(self) -> str:
        return " or ".join(self.names) or "the input"

    def check_folder(self, info: os.stat_result, path: Path) -> None:
        """Refuse ``path`` (to be written) when the folder it opens into is protected."""
        if identity(info) in self.dirs:
            raise UnsafeOutputError(
                f"{path}: refused to write: its folder resolves into {self._where()} "
                "(through a link or a mount); inputs are never written"
            )

    def problem(self, path: Path) -> str | None:
        """Why writing ``path`` would touch an input, or None: its nearest existing
        folder is protected, or it is an input file (a link or a hard link to one)."""
        folder = next((f for f in path.parents if _identity_of(f)), None)
        if folder is not None and _identity_of(folder) in self.dirs:
            return (
                f"{path}: its folder resolves into {self._where()} (through a link or a "
                "mount); inputs are never written"
            )
        if self.is_input(path):
            return f"{path}: is an input file itself (a link to it); remove it from the output"
        return None

    def is_input(self, path: Path) -> bool:
        """True when ``path`` is one of the input files (by identity: links count)."""
        return _identity_of(path) in self.files

    def make_dirs(self, folder: Path) -> None:
        """``mkdir -p`` that creates nothing inside a protected folder."""
        missing = []
        parent = Path(folder)
        while not parent.is_dir():
            missing.append(parent)
            if parent.parent == parent:
                break
            parent = parent.parent
        if missing:
            self.check_folder(parent.stat(), missing[-1])
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
