"""Fuzz every reader of user input with many seeded examples: the properties of tests/test_fuzz_readers.py
(there they run a few dozen derandomized examples each, in CI), here with ``--examples`` per property from
``--seed``, each failure reported apart (its exception and the reader's last line of code) instead of stopping.

    python benchmarks/fuzz_readers.py [--examples 1000] [--seed 0] [--only s3rec_sequences,spec_yaml]

Prints, per property, the examples run and how they ended (a correct result, a clean one-line error, or a
failure), then every distinct failure (exception, where it was raised, message) with how many examples hit it;
exits 1 when there is one. Failing examples are counted where they happen, not shrunk, so every property runs
all its examples.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import test_fuzz_readers as fuzz  # noqa: E402

PROPERTIES = {
    name.removeprefix("test_fuzz_"): fn
    for name, fn in vars(fuzz).items()
    if name.startswith("test_fuzz_") and callable(fn)
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=1000, help="examples per property (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (default: %(default)s)")
    p.add_argument("--only", help="comma-separated property names (default: all): " + ", ".join(PROPERTIES))
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(PROPERTIES)
    phases = [Phase.explicit, Phase.generate]
    config = settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=phases,
        report_multiple_bugs=True,
        suppress_health_check=list(HealthCheck),
    )
    fuzz.COLLECT = True
    total, failed = 0, 0
    t0 = time.perf_counter()
    print(
        "| property | examples | correct result | clean error | failed | seconds |\n|---|---|---|---|---|---|"
    )
    for name in names:
        fuzz.OUTCOMES.clear()
        fuzz.FAILURES.clear()
        fuzz.SAMPLES.clear()
        t = time.perf_counter()
        seed(args.seed)(config(PROPERTIES[name]))()
        ok = sum(n for (_, kind), n in fuzz.OUTCOMES.items() if kind == "ok")
        err = sum(n for (_, kind), n in fuzz.OUTCOMES.items() if kind == "error")
        bad = sum(fuzz.FAILURES.values())
        total += ok + err + bad
        failed += len(fuzz.FAILURES)
        print(f"| {name} | {ok + err + bad} | {ok} | {err} | {bad} | {time.perf_counter() - t:.1f} |")
        for (reader, what), n in sorted(fuzz.FAILURES.items()):
            sample = fuzz.SAMPLES[reader, what].replace("|", "/")
            print(f"|   | {reader}: {what}, {n} examples, e.g. `{sample}` | | | | |")
    print(
        f"\n{total} examples in {len(names)} properties (seed {args.seed}): {failed} distinct failures, "
        f"{time.perf_counter() - t0:.0f}s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
