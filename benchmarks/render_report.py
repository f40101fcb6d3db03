"""Render `mdsrec report`'s report.html in a real browser (headless Chromium, Debian's ``chromium`` package) to a
PNG, to look at the page as a reader sees it.

    python benchmarks/render_report.py RECORDS_DIR OUT.png [--width 1280] [--height 4000]

Writes the report into a temporary folder, loads its report.html from disk (the page is self-contained: no
network) and saves a full-width screenshot. Chromium runs with networking features off, so a page that tried to
fetch anything would show it as missing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mdsrec.studies.bench_records import load_benchmarks
from mdsrec.studies.report import load_records, write_report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="+")
    p.add_argument("out")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=4000)
    args = p.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report"
        write_report(load_records(args.records), report, load_benchmarks(args.records))
        profile = Path(tmp) / "profile"
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={args.width},{args.height}",
            f"--screenshot={Path(args.out).resolve()}",
            (report / "report.html").resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
