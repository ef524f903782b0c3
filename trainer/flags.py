"""The command line of a run: `--preset NAME` or `--config FILE`, then one `--field value` per config field
(trainer/config.py), its help taken from the field's metadata.

    cfg = config_from_args(["--preset", "tiny", "--arch", "rnn", "--alpha", "0"])"""
from __future__ import annotations

import argparse
from dataclasses import fields

from trainer.config import FIELD_INDEX, PRESETS, SECTIONS, RunConfig, _field_type, preset


def build_parser(prog: str = "python -m trainer.train", description: str = "",
                 choices: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """A parser with --preset and one --field per config field; defaults are left as None so that only fields given on
    the command line override the preset. `choices` adds registry listings to the help of the named fields."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo", help=f"named preset: {', '.join(PRESETS)} (default demo)")
    p.add_argument("--config", default="", help="a config.json to start from instead of a preset")
    p.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # added by the deepspeed launcher
    choices = choices or {}
    for sec, cls in SECTIONS.items():
        g = p.add_argument_group(f"{sec} config")
        for f in fields(cls):
            t = _field_type(f)
            h = f.metadata["help"] + (f" [{choices[f.name]}]" if f.name in choices else "") + f" (default {f.default!r})"
            if t is bool:
                g.add_argument(f"--{f.name}", nargs="?", const="true", default=None, metavar="BOOL", help=h)
            else:
                g.add_argument(f"--{f.name}", default=None, metavar=t.__name__.upper(), help=h)
    return p


def config_from_namespace(ns: argparse.Namespace) -> RunConfig:
    cfg = RunConfig.load(ns.config) if ns.config else preset(ns.preset)
    given = [key for key in FIELD_INDEX if getattr(ns, key, None) is not None]
    for key in given:
        cfg.set(key, getattr(ns, key))
    cfg.explicit = set(given)  # fields given on the command line (not saved; --init_from checks them)
    return cfg


def config_from_args(argv: list[str] | None = None) -> RunConfig:
    return config_from_namespace(build_parser().parse_args(argv))
