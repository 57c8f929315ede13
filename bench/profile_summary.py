"""Summaries of py-spy collapsed stacks (`py-spy record --format raw`): self and inclusive time per
function and per package.

    .venv/bin/python bench/profile_summary.py bench/out/profile-adoptstream.collapsed [--top 25]

Native code (orjson, rocksdict, aiokafka's C record builder) counts in the Python frame calling it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frame(text: str) -> tuple[str, str]:
    m = _FRAME_RE.match(text.strip())
    if not m:
        return text.strip(), ""
    file = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "src/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return m.group("func"), file


def _package(file: str) -> str:
    if not file:
        return "?"
    head = file.split("/", 1)[0]
    if head == "adoptstream":
        parts = file.split("/")
        return "/".join(parts[:2]) if len(parts) > 2 else head
    return head.removesuffix(".py")


def summarize(path: Path, top: int = 25) -> dict:
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkg_self: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        parsed = [_frame(f) for f in frames]
        func, file = parsed[-1]
        self_t[f"{func} ({file})"] += n
        pkg_self[_package(file)] += n
        for name in {f"{fn} ({fl})" for fn, fl in parsed}:
            incl[name] += n
    return {
        "samples": total,
        "self": [(k, v) for k, v in self_t.most_common(top)],
        "inclusive": [(k, v) for k, v in incl.most_common(top * 2)
                      if "adoptstream" in k or "aiokafka" in k or "rocks" in k][:top],
        "packages": [(k, v) for k, v in pkg_self.most_common(15)],
    }


def render(summary: dict, top: int = 15) -> str:
    total = summary.get("samples") or 0
    if not total:
        return "profile: no samples"
    out = [f"profile of the adoptstream worker: {total:,} samples (py-spy, 100 Hz, on-CPU only)"]
    out.append("  top self time (function (file)):")
    for name, n in summary["self"][:top]:
        out.append(f"    {100 * n / total:5.1f}%  {name}")
    out.append("  top inclusive (adoptstream / aiokafka / rocksdict frames):")
    for name, n in summary["inclusive"][:top]:
        out.append(f"    {100 * n / total:5.1f}%  {name}")
    out.append("  self time by package:")
    out.append("    " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in summary["packages"]))
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    print(render(summarize(Path(args.path), args.top), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
