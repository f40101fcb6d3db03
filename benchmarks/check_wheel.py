"""Build mdsrec's wheel (no dependencies, into a temporary folder) and check that it holds every file the package
reads at run time: the frozen configs, the data recipes and the paper's Table 2, each equal to the source tree's.

    python benchmarks/check_wheel.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "mdsrec"
PATTERNS = ("configs/experiments/*/*.yaml", "data/recipes/*.yaml", "resources/*.tsv")


def main() -> int:
    expected = sorted(p for pattern in PATTERNS for p in PACKAGE.glob(pattern))
    if not expected:
        print("no package data found in the source tree", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                tmp,
                str(ROOT),
            ],
            check=True,
        )
        (wheel,) = Path(tmp).glob("mdsrec-*.whl")
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            missing, differ = [], []
            for path in expected:
                name = "mdsrec/" + path.relative_to(PACKAGE).as_posix()
                if name not in names:
                    missing.append(name)
                elif z.read(name) != path.read_bytes():
                    differ.append(name)
    for name in missing:
        print(f"missing from the wheel: {name}", file=sys.stderr)
    for name in differ:
        print(f"differs in the wheel: {name}", file=sys.stderr)
    if missing or differ:
        return 1
    print(f"{wheel.name}: all {len(expected)} package data files present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
