"""The command line of a run: `--preset NAME` or `--config FILE`, then one `--field value` per config field
(trainer/config.py), its help taken from the field's docstring.

    cfg = config_from_args(["--preset", "tiny", "--arch", "rnn", "--alpha", "0"])"""
from __future__ import annotations

import argparse
from dataclasses import fields

from trainer.config import FIELD_INDEX, PRESETS, SECTIONS, RunConfig, _field_type, preset


def _field_help(cls) -> dict[str, str]:
    """Field docstrings: the string literal right after each field in the class source."""
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(cls))
    out, body = {}, tree.body[0].body
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            out[a.target.id] = " ".join(b.value.value.split())
    return out


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
        helps = _field_help(cls)
        for f in fields(cls):
            t = _field_type(f)
            h = helps.get(f.name, "")
            if f.name in choices:
                h += f" [{choices[f.name]}]"
            h += f" (default {f.default!r})"
            if t is bool:
                g.add_argument(f"--{f.name}", nargs="?", const="true", default=None, metavar="BOOL", help=h)
            else:
                g.add_argument(f"--{f.name}", default=None, metavar=t.__name__.upper(), help=h)
    return p


def config_from_namespace(ns: argparse.Namespace) -> RunConfig:
    cfg = RunConfig.load(ns.config) if ns.config else preset(ns.preset)
    explicit = set()
    for key in FIELD_INDEX:
        v = getattr(ns, key, None)
        if v is not None:
            cfg.set(key, v)
            explicit.add(key)
    cfg.explicit = explicit  # fields given on the command line (not saved; --init_from checks them)
    return cfg


def config_from_args(argv: list[str] | None = None) -> RunConfig:
    return config_from_namespace(build_parser().parse_args(argv))
