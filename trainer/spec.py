"""Grid specs: the YAML/JSON schema (pydantic), the cells it expands to and their ids.

    name: alpha                     # results go to <root>/<name>/ (root: --root, default runs/)
    description: ...
    base: {preset: demo, max_steps: 400}    # any config field (see python -m trainer.train --help)
    seeds: [0, 1]
    axes:                           # full product of the axes ...
      alpha: [0, 0.1, 0.3]
    cells:                          # ... and/or an explicit list of overrides (each crossed with seeds)
      - {alpha: 0.1, alpha_schedule: cosine}
    eval:                           # lm-eval for --task lm (synthetic tasks score every test length)
      tasks: [olh_lsm, olh_ppl_len, olh_mini_lc]
      metadata: {}                  # passed to lm-eval's --metadata (l_train etc. come from the run)
    launcher: {kind: plain}         # or {kind: deepspeed, config: ds_configs/zero2.json, num_gpus: 2}
    pretrain: {seq_len: 64}         # optional: first train base+pretrain per seed, then start every
                                    # cell of that seed from it (--init_from); see grids/context_extension.yaml
"""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainer.config import FIELD_INDEX, PRESETS, RunConfig, _field_type, hashed_fields, preset
from trainer.errors import OLHError

DEFAULT_TASKS = ["olh_lsm", "olh_ppl_len", "olh_mini_lc"]
Overrides = dict[str, Any]


def _check_fields(d: dict, allow=()) -> dict:
    for k in d:
        if k not in FIELD_INDEX and k not in allow:
            raise ValueError(f"unknown config field '{k}' (see python -m trainer.train --help)")
    return d


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalSpec(Strict):
    tasks: list[str] = DEFAULT_TASKS
    metadata: dict = {}
    limit: int | float | None = None
    batch_size: int | str = 8

    @field_validator("tasks", mode="before")
    @classmethod
    def _split(cls, v):  # "olh_lsm,olh_ppl_len" as on the lm-eval command line
        return [t.strip() for t in v.split(",") if t.strip()] if isinstance(v, str) else v


class LauncherSpec(Strict):
    kind: Literal["plain", "deepspeed"] = "plain"
    config: str = "ds_configs/zero2.json"
    num_gpus: int = 1


class GridSpec(Strict):
    name: str = Field(min_length=1, pattern=r"^[^/]+$")
    description: str = ""
    base: Overrides = {}
    seeds: list[int] = Field([0], min_length=1)
    axes: dict[str, list] = {}
    cells: list[Overrides] = []
    eval: EvalSpec = EvalSpec()
    launcher: LauncherSpec = LauncherSpec()
    pretrain: Overrides | None = None

    @field_validator("base")
    @classmethod
    def _base(cls, v):
        if "preset" in v and v["preset"] not in PRESETS:
            raise ValueError(f"unknown preset '{v['preset']}'; valid: {', '.join(PRESETS)}")
        return _check_fields(v, allow={"preset"})

    @field_validator("axes")
    @classmethod
    def _axes(cls, v):
        for k, vals in _check_fields(v).items():
            if not vals:
                raise ValueError(f"axis '{k}' is empty; give it a non-empty list of values")
        return v

    @field_validator("cells", "pretrain")
    @classmethod
    def _cells(cls, v):
        for c in v if isinstance(v, list) else [v] if v else []:
            _check_fields(c)
        return v

    @model_validator(mode="after")
    def _cells_to_run(self):
        if not self.axes and not self.cells:
            raise ValueError("give 'axes' or 'cells' (nothing to run)")
        for ov in combos(self):  # every value has its field's type, every synthetic cell is runnable
            try:
                cfg = resolve(self, ov, self.seeds[0])
                if cfg.data.task != "lm":
                    from trainer.synthetic.objective import check
                    check(cfg)
            except OLHError as e:
                raise OLHError(f"cell {json.dumps(ov)}: {e}") from None
        return self


def load_spec(path: str | Path) -> GridSpec:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise OLHError(f"cannot read grid spec {p}: {e.strerror}") from None
    try:
        if p.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml
            raw = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - yaml and json raise different types; both mean "malformed"
        raise OLHError(f"grid spec {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                       f"{str(e).splitlines()[0]}") from None
    return validate_spec(raw, str(p))


def validate_spec(raw, where: str = "grid spec") -> GridSpec:
    """The spec as a GridSpec, or one OLHError line naming the bad key."""
    try:
        return GridSpec.model_validate(raw)
    except OLHError as e:
        raise OLHError(f"{where}: {e}") from None
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            model = {(): GridSpec, ("eval",): EvalSpec, ("launcher",): LauncherSpec}.get(tuple(err["loc"][:-1]))
            raise OLHError(f"{where}: unknown key '{loc}'"
                           + (f"; valid: {', '.join(model.model_fields)}" if model else "")) from None
        raise OLHError(f"{where}: {loc + ': ' if loc else ''}{msg}") from None


def combos(spec: GridSpec) -> list[dict]:
    """The overrides of every cell (without seeds): the product of the axes, then the explicit cells."""
    keys = list(spec.axes)
    out = [dict(zip(keys, vals)) for vals in itertools.product(*spec.axes.values())] if keys else []
    return out + [dict(c) for c in spec.cells]


def resolve(spec: GridSpec, overrides: dict, seed: int) -> RunConfig:
    base = dict(spec.base)
    cfg = preset(base.pop("preset", "demo"))
    for k, v in {**base, **overrides, "seed": seed}.items():
        cfg.set(k, _coerce(k, v))
    return cfg


def _coerce(key: str, v):
    """A spec value as its config field's type: YAML's `0` for a float field becomes 0.0 (else
    {alpha: 0} and {alpha: 0.0} would hash to two cells), a number for a str field becomes its text;
    lists/mappings and numbers for bool fields are rejected with the field's name."""
    t = _field_type(FIELD_INDEX[key][1])
    if isinstance(v, str) or v is None and t is str:
        return "" if v is None else v
    ok = {bool: (bool,), int: (int,), float: (int, float), str: (int, float)}.get(t, ())
    if isinstance(v, bool) and t is not bool or not isinstance(v, ok):
        raise OLHError(f"config field '{key}' expects {t.__name__}, got {v!r}")
    return t(v) if t is not str else str(v)


def cell_id(cfg: RunConfig) -> str:
    """12 hex digits of a hash of the fields that define the cell's results and differ from the
    defaults (trainer/config.py: hashed_fields), so adding a config field keeps finished grids valid."""
    return hashlib.sha1(json.dumps(hashed_fields(cfg), sort_keys=True).encode()).hexdigest()[:12]
