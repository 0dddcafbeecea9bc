"""Sizes of what `sam build` produced, checked against Lambda's package limits; prints a Markdown table.

Limits (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html): a function's deployment package
plus all its layers, unzipped, at most 250 MB; a .zip uploaded directly at most 50 MB (sam deploy uploads to S3,
so the unzipped limit is the one that binds; the zipped size is still shown, deflate level 9 like `zip -9`).
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

UNZIPPED_LIMIT = 250 * 1024 * 1024
ZIPPED_DIRECT_LIMIT = 50 * 1024 * 1024


def unzipped(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def zipped(path: Path) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for p in sorted(path.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(path))
    return buf.tell()


def human(n: int) -> str:
    return f"{n / 1024 / 1024:.2f} MB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KB"


def main(build: str = ".aws-sam/build") -> int:
    root = Path(build)
    artifacts = sorted(p for p in root.iterdir() if p.is_dir())
    if not artifacts:
        print(f"nothing built under {root}: run `make build`", file=sys.stderr)
        return 1
    sizes = {p.name: (unzipped(p), zipped(p)) for p in artifacts}
    layers = {n: s for n, s in sizes.items() if n.endswith("Layer")}
    layer_total = sum(u for u, _ in layers.values())
    print("| artifact | unzipped | zipped | unzipped with layers (limit 250 MB) |")
    print("| --- | ---: | ---: | ---: |")
    failed = False
    for name, (u, z) in sizes.items():
        total = u if name in layers else u + layer_total
        failed |= total > UNZIPPED_LIMIT
        print(f"| {name} | {human(u)} | {human(z)} | {human(total)} |")
    if failed:
        print("a function with its layers exceeds Lambda's 250 MB unzipped limit", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
