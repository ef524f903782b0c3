"""python -m trainer.synthetic --paper [--jobs N] [--root DIR]: the paper's figure, grids/synthetic_paper.yaml
run by the ablation runner (any other trainer.ablate flag passes through)."""
import sys
from pathlib import Path

from trainer.ablate import main

PAPER = Path(__file__).resolve().parents[2] / "grids" / "synthetic_paper.yaml"
args = sys.argv[1:]
if "--paper" not in args:
    sys.exit("usage: python -m trainer.synthetic --paper [--jobs N] [--root DIR] (other grids: python -m "
             "trainer.ablate grids/synthetic.yaml; one run: python -m trainer.train --preset synthetic --task mean)")
sys.exit(main([str(PAPER)] + [a for a in args if a != "--paper"]))
