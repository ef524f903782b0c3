"""``olharness``: the ``lm_eval`` command line, unchanged, with our models and tasks available.

    olharness --model ol --model_args pretrained=RUN_DIR --tasks olh_lsm,olh_ppl_len
    olharness run --model hf-lsm --model_args pretrained=gpt2 --tasks olh_lsm --metadata l_train=512 tokenizer=gpt2
    olharness ls tasks

Before handing over to ``lm_eval.__main__.cli_evaluate`` it

1. registers ``ol``, ``hf-lsm`` and ``hf-mid`` with lm-eval (``olharness.registration``);
2. adds our ``tasks/`` folder to ``--include_path`` (after the user's own, if given);
3. fills task metadata from ``--model_args pretrained=DIR`` when DIR is one of our run directories
   (or an HF export of ours) and ``--metadata`` does not already set them: ``run_dir`` (ol runs),
   ``l_train`` and ``tokenizer``. So length-scaled tasks (olh_lsm, olh_ppl_len, olh_mini_lc) need
   no ``--metadata`` for our checkpoints.

A user error (``OLHError``: bad checkpoint, unknown metadata key, a model without ``lsm``) prints one
line, ``error: ...``, and exits with status 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from olharness.registration import TASKS_DIR, register_models

_HARNESS_COMMANDS = ("run", "ls", "validate")


def injected_metadata(model_args: dict | None, metadata: dict | None) -> dict:
    """metadata plus run_dir / l_train / tokenizer derived from model_args['pretrained']."""
    from olharness.task_common import _hf_export_l_train, _ol_checkpoint

    md = dict(metadata or {})
    pre = (model_args or {}).get("pretrained")
    if not pre:
        return md
    ck = _ol_checkpoint(pre)
    if ck is not None:
        md.setdefault("run_dir", str(pre))
        if "l_train" not in md:
            md["l_train"] = int(json.loads((ck / "config.json").read_text())["data"]["seq_len"])
        md.setdefault("tokenizer", str(ck / "tokenizer.model"))
    elif (l_train := _hf_export_l_train(pre)) is not None:
        md.setdefault("l_train", l_train)
        if (Path(str(pre)) / "tokenizer.model").is_file():
            md.setdefault("tokenizer", str(Path(str(pre)) / "tokenizer.model"))
    return md


def _with_our_tasks(include_path):
    paths = [] if not include_path else include_path if isinstance(include_path, list) else [include_path]
    return paths + ([TASKS_DIR] if TASKS_DIR not in paths else [])


def main(argv: list[str] | None = None) -> int:
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from trainer.errors import OLHError

    register_models()
    args_in = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    sys.argv = ["olharness", *args_in]
    try:
        setup_logging()
        parser = HarnessCLI()
        args = parser.parse_args()
        if getattr(args, "command", None) in ("run", "ls", "validate") and hasattr(args, "include_path"):
            args.include_path = _with_our_tasks(args.include_path)
        if getattr(args, "command", None) == "run":
            args.metadata = injected_metadata(args.model_args, args.metadata) or None
        parser.execute(args)
    except OLHError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
