"""Does `mdsrec prepare` give the same bytes (the same data fingerprint) on another CPU?

A second machine is stood in for by other kernels on this one: PyTorch's generic CPU kernels
(``ATEN_CPU_CAPABILITY=default``) and MKL's compatible code branch (``MKL_CBWR=COMPATIBLE``) instead of the AVX2/AVX-512
ones. Prepares the recipe once per precision and path (each in a fresh process, since both variables are read when
the libraries load), and prints the text features' sha256, the fingerprint and the wall time of each.

    python benchmarks/prepare_reproducibility.py sports /work/shared/data/sports /tmp/prep_repro
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PATHS = {"native": {}, "generic": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe")
    ap.add_argument("source")
    ap.add_argument("scratch", help="folder for the prepared copies (removed afterwards)")
    ap.add_argument("--precisions", default="float64,float32")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    print("precision path    seconds text-features  fingerprint")
    for precision in args.precisions.split(","):
        for name, env in PATHS.items():
            out = scratch / f"{precision}-{name}"
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "mdsrec.cli", "prepare", args.recipe, "--source", args.source, "--out",
                 str(out), "--overwrite", "--no-progress", "--text-precision", precision],
                env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            manifest = json.loads((out / "manifest.json").read_text())
            text = [f for f in manifest["files"] if f.startswith("features/text")]
            digest = manifest["files"][text[0]][:12] if text else "(no text)"
            print(f"{precision:9} {name:8} {seconds:7.0f} {digest:14} {manifest['fingerprint'][:12]}")
            shutil.rmtree(out)


if __name__ == "__main__":
    main()
