"""Name -> object registries for every ablation axis. Unknown names fail listing the valid ones; a name
may carry one argument after a colon (``first_frac:0.1``) for entries registered with ``takes_arg=True``.

    @DIVERGENCES.register("hellinger", help="Hellinger distance on probabilities")
    def hellinger(lp, lq): ..."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from trainer.errors import OLHError


@dataclass
class Entry:
    obj: Any
    help: str
    takes_arg: bool


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # used in messages: "unknown divergence 'foo'"
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, help: str = "", takes_arg: bool = False) -> Callable:
        def deco(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = Entry(obj, help or (obj.__doc__ or "").strip().split("\n")[0], takes_arg)
            return obj
        return deco

    def names(self) -> list[str]:
        return [n + (":ARG" if e.takes_arg else "") for n, e in self._entries.items()]

    def __contains__(self, spec: str) -> bool:
        try:
            self.parse(spec)
            return True
        except OLHError:
            return False

    def parse(self, spec: str) -> tuple[Entry, str | None]:
        name, _, arg = str(spec).partition(":")
        entry = self._entries.get(name)
        if entry is None or (entry.takes_arg and not arg) or (arg and not entry.takes_arg):
            raise OLHError(f"unknown {self.kind} '{spec}'; valid: {', '.join(self.names())}")
        return entry, (arg or None)

    def get(self, spec: str) -> Any:
        """The registered object; for ``name:ARG`` entries, ``obj(ARG)``."""
        entry, arg = self.parse(spec)
        return entry.obj(arg) if entry.takes_arg else entry.obj

    def describe(self) -> str:
        """One line for --help: 'a (help), b (help)'."""
        return "; ".join(f"{n}: {e.help}" if e.help else n for n, e in zip(self.names(), self._entries.values()))
