"""``olharness``: the ``lm_eval`` command line, unchanged, with our models and tasks available.

Before handing over to lm-eval's ``HarnessCLI`` it registers our models, adds our ``tasks/`` folder to
``--include_path``, and fills ``run_dir`` / ``l_train`` / ``tokenizer`` metadata from ``--model_args pretrained=DIR``
when DIR is one of our runs or exports, so length-scaled tasks need no ``--metadata``. A user error (ours, or a
ValueError lm-eval raises while checking the command line) prints one ``error: ...`` line and exits with status 2."""
from __future__ import annotations

import sys
import traceback

from olharness.registration import TASKS_DIR, register_models

#: where lm-eval validates its command line: a ValueError raised there is the user's input
_LM_EVAL_VALIDATION = ("lm_eval/config/", "lm_eval/_cli/", "lm_eval/api/registry.py")


def injected_metadata(model_args: dict | None, metadata: dict | None) -> dict:
    """metadata plus run_dir / l_train / tokenizer derived from model_args['pretrained']."""
    from olharness.task_common import run_facts
    pre = (model_args or {}).get("pretrained")
    return {**(run_facts(pre) if pre else {}), **(metadata or {})}


def _with_our_tasks(include_path):
    paths = [] if not include_path else include_path if isinstance(include_path, list) else [include_path]
    return paths + ([TASKS_DIR] if TASKS_DIR not in paths else [])


def user_error(e: BaseException) -> str | None:
    """The one-line message for an exception a user's input caused, else None (a bug: traceback)."""
    from trainer.errors import OLHError
    if isinstance(e, OLHError):
        return str(e)
    if isinstance(e, AttributeError) and e.name == "lsm":  # lm-eval's getattr(lm, "lsm")
        return (f"model '{type(e.obj).__name__}' cannot answer lsm requests (task olh_lsm); use --model ol "
                "(our checkpoints) or --model hf-lsm (any Hugging Face model), or the loglikelihood-only "
                "approximation, task olh_lsm_ll")
    frames = traceback.extract_tb(e.__traceback__)
    if isinstance(e, ValueError) and frames and any(s in frames[-1].filename.replace("\\", "/")
                                                    for s in _LM_EVAL_VALIDATION):
        return str(e).strip().splitlines()[0]
    return None


def _run() -> None:
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging
    from trainer.errors import OLHError
    setup_logging()
    parser = HarnessCLI()
    args = parser.parse_args()
    command = getattr(args, "command", None)
    if command in ("run", "ls", "validate") and hasattr(args, "include_path"):
        args.include_path = _with_our_tasks(args.include_path)
    if command == "run":
        if args.limit is not None and float(args.limit) <= 0:
            raise OLHError(f"--limit must be > 0 (a count, or a fraction below 1), got {args.limit}")
        args.metadata = injected_metadata(args.model_args, args.metadata) or None
    parser.execute(args)


def main(argv: list[str] | None = None) -> int:
    register_models()
    saved = sys.argv
    sys.argv = ["olharness", *(sys.argv[1:] if argv is None else argv)]
    try:
        _run()
    except Exception as e:  # noqa: BLE001 - only user errors are caught; the rest re-raise
        msg = user_error(e)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
