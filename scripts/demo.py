"""`make demo`: train the demo grid (decoder, alpha 0 vs 0.1, two seeds) on Jane Austen, score every
checkpoint with lm-eval, write the report, and print its headline table.

    python -m scripts.demo [--root runs] [--jobs 2]

Rerunning continues where it stopped: finished cells are skipped, interrupted ones resume.
"""
import argparse
import sys
import time
from pathlib import Path

from trainer.ablate import Grid, load_spec
from trainer.errors import OLHError
from trainer.report import headline_table, write_report

GRID = Path(__file__).resolve().parent.parent / "grids" / "demo.yaml"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs", help="output root (default runs/)")
    p.add_argument("--jobs", type=int, default=2, help="cells run at once (default 2: one per core)")
    args = p.parse_args(argv)
    t0 = time.time()
    try:
        grid = Grid(load_spec(GRID), args.root)
        grid.run(args.jobs)
        report = write_report(grid.dir)
    except OLHError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n" + headline_table(report))
    print(f"\nreport: {report}  (plots beside it)   demo wall time: {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
