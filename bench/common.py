"""Shared helpers for the benchmark scripts: machine description and RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    """CPU model and cores, RAM, GPU (if any), torch version: one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{cpu}, {os.cpu_count()} cores"]
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        parts.append(f"{pages / 2**30:.0f} GiB RAM")
    except (ValueError, OSError, AttributeError):
        pass
    import torch

    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    else:
        parts.append("no GPU")
    parts.append(f"torch {torch.__version__}, Python {platform.python_version()}")
    return "; ".join(parts)


def command() -> str:
    # Quoted as a shell needs it, so the line can be pasted back.
    return "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def append_results(title: str, body: str, path: Path = RESULTS) -> None:
    """Append one dated section to bench/RESULTS.md (or ``path``)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## {title} ({stamp})\n\n"
        f"- machine: {machine()}\n"
        f"- command: `{command()}`\n\n"
        f"{body.rstrip()}\n"
    )
    path = Path(path)
    if not path.exists():
        path.write_text("# Benchmark results\n\nEvery section is appended by a script in bench/.\n")
    text = path.read_text(encoding="utf-8")
    # The one-line-per-machine ``## Speed`` summary stays last.
    at = text.find("\n## Speed\n")
    text = text + section if at < 0 else text[:at].rstrip("\n") + "\n" + section + text[at:]
    path.write_text(text, encoding="utf-8")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def record_speedup(speedup: float, label: str, path: Path = RESULTS) -> None:
    """Keep one line per machine under the ``## Speed`` heading, in the fixed form
    ``clean speed-up over the reference loop: N.Nx (machine)`` that scripts read."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    line = f"clean speed-up over the reference loop: {speedup:.1f}x ({label})"
    lines = text.splitlines()
    if "## Speed" not in lines:
        lines += ["", "## Speed", ""]
    start = lines.index("## Speed") + 1
    end = start
    while end < len(lines) and not lines[end].startswith("#"):
        end += 1
    kept = [x for x in lines[start:end] if x.strip() and not x.endswith(f"({label})")]
    lines[start:end] = ["", *kept, line, ""]
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
