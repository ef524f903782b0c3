"""Corpora for ``load_corpus(spec)``: ``austen`` (the six novels of ``r-cran-janeaustenr``, split by book;
``austen:PATH`` reads that Rdata.rdb), a local ``.txt`` file (one document), a ``.jsonl``/``.json``/ ``.parquet`` file
with a ``text`` column, a folder of those, or a hub dataset ``name[:split]`` for ``datasets.load_dataset``.

Except for Austen, whole documents are held out: ``max(1, round(n * heldout_frac))`` of them (at most ``n - 1``), chosen
by ``seed``; a single document is cut at ``1 - heldout_frac`` of its length."""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.data.austen import find_austen, read_rdata_rdb, split_austen
from trainer.errors import DataError

TEXT_FIELD = "text"
#: file suffix -> ``datasets`` packaged builder
BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
#: columns used to name held-out documents, first found wins
NAME_FIELDS = ("short_book_title", "title", "name", "id")


@dataclass
class Corpus:
    """A corpus split into training documents and held-out long documents."""

    name: str  # ``austen``, the file/folder name, or the hub dataset name
    train: list[str]  # training documents (one string each)
    heldout: list[str]  # held-out documents (PPL-by-length, LSM, mini long-context tasks)
    heldout_names: list[str] = field(default_factory=list)  # book title, file name or ``file:row`` of each

    def __repr__(self) -> str:
        n_train = sum(len(t) for t in self.train)
        n_held = sum(len(t) for t in self.heldout)
        return (f"Corpus(name={self.name!r}, train={len(self.train)} docs/{n_train} chars, "
                f"heldout={self.heldout_names} ({n_held} chars))")


def load_corpus(spec: str = "austen", heldout_frac: float = 0.1, seed: int = 0) -> Corpus:
    """Load and split a corpus; see the module docstring for ``spec``. ``DataError`` on bad input."""
    spec = str(spec).strip()
    if not spec:
        raise DataError("corpus spec is empty; use 'austen', a local path or a hub dataset name")
    if spec == "austen" or spec.startswith("austen:"):
        return _load_austen(spec.partition(":")[2] or None)
    if not 0.0 < heldout_frac < 1.0:
        raise DataError(f"heldout_frac must be between 0 and 1 (exclusive), got {heldout_frac}")
    path = Path(spec).expanduser()
    if path.exists():
        docs, names = _load_local(path)
        return _split_docs(path.name or str(path), docs, names, heldout_frac, seed)
    if _looks_like_path(spec):
        raise DataError(f"corpus path {spec} does not exist")
    docs, names = _load_hub(spec)
    return _split_docs(spec, docs, names, heldout_frac, seed)


def _load_austen(path: str | None) -> Corpus:
    rdb = find_austen(path)
    train, heldout = split_austen(read_rdata_rdb(rdb), source=str(rdb))
    return Corpus("austen", list(train.values()), list(heldout.values()), list(heldout))


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith(("/", "./", "../", "~", ".")) or "\\" in spec or Path(spec).suffix.lower() in BUILDERS
            or spec.count("/") > 1)


@contextlib.contextmanager
def _quiet_datasets():
    """Silence ``datasets``' per-load progress bars for small local loads."""
    import datasets
    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        yield datasets
    finally:
        if not was_disabled:
            datasets.utils.enable_progress_bars()


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in BUILDERS:
            raise DataError(f"corpus file {path} has an unsupported type; use {', '.join(BUILDERS)} "
                            "(or a folder of them)")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in BUILDERS
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise DataError(f"corpus folder {path} has no {', '.join(BUILDERS)} files")
    return files


def _load_one(builder: str, files: list[Path]):
    """One ``datasets`` load of files sharing a builder; returns the Dataset or raises."""
    with _quiet_datasets() as datasets:
        kwargs = {"sample_by": "document"} if builder == "text" else {}
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", **kwargs)


def _texts_from(ds, where: str) -> tuple[list, list | None]:
    """The checked text column of a Dataset and its name column (None without one)."""
    if TEXT_FIELD not in ds.column_names:
        raise DataError(f"{where} has no '{TEXT_FIELD}' field (columns: {', '.join(ds.column_names) or 'none'})")
    texts = ds[TEXT_FIELD]
    for i, t in enumerate(texts):
        if t is None:
            raise DataError(f"{where} row {i} has no '{TEXT_FIELD}' field (or it is null)")
        if not isinstance(t, str):
            raise DataError(f"{where} row {i}: '{TEXT_FIELD}' is {type(t).__name__}, not a string")
    name_col = next((c for c in NAME_FIELDS if c in ds.column_names), None)
    return texts, (ds[name_col] if name_col else None)


def _load_file(builder: str, f: Path) -> tuple[list[str], list[str]]:
    try:
        ds = _load_one(builder, [f])
    except Exception as e:  # datasets wraps parse errors; report the underlying one
        cause = e.__cause__ or e
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        raise DataError(f"cannot read corpus file {f} as {builder}: {type(cause).__name__}: {first}") from None
    texts, names = _texts_from(ds, f"corpus file {f}")
    if builder == "text":
        return texts, [f.stem] * len(texts)
    names = [f"{f.name}:{i}" if not names or names[i] is None else str(names[i]) for i in range(len(texts))]
    return texts, names


def _load_local(path: Path) -> tuple[list[str], list[str]]:
    docs, names = [], []
    # Group consecutive files by builder (keeps sorted order); load each group in one call and
    # fall back to per-file loads to name the culprit when a group fails or lacks the field.
    for builder, group in itertools.groupby(_local_files(path), key=lambda f: BUILDERS[f.suffix.lower()]):
        group = list(group)
        if len(group) > 1:
            try:
                texts, gnames = _texts_from(_load_one(builder, group), "")
            except Exception:
                pass  # re-read file by file below for a precise message
            else:
                if builder == "text":
                    gnames = [f.stem for f in group] if len(texts) == len(group) else None
                if gnames is None or any(n is None for n in gnames):
                    gnames = [f"{path.name}:{len(docs) + i}" for i in range(len(texts))]
                docs.extend(texts)
                names.extend(str(n) for n in gnames)
                continue
        for f in group:
            t, n = _load_file(builder, f)
            docs.extend(t)
            names.extend(n)
    return _nonempty(docs, names, str(path))


def _load_hub(spec: str) -> tuple[list[str], list[str]]:
    name, _, split = spec.partition(":")
    split = split or "train"
    try:
        import datasets
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"corpus {spec!r} is not a local path and could not be loaded as hub dataset {name!r} "
                        f"split {split!r} ({first}); check the name and the network (offline mode may be on: "
                        "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)") from None
    texts, names = _texts_from(ds, f"hub dataset {name!r}")
    names = [f"{name}[{i}]" if not names or names[i] is None else str(names[i]) for i in range(len(texts))]
    return _nonempty(texts, names, f"hub dataset {name!r}")


def _nonempty(docs: list[str], names: list[str], where: str) -> tuple[list[str], list[str]]:
    keep = [i for i, d in enumerate(docs) if d.strip()]
    if not keep:
        raise DataError(f"corpus {where} is empty (no non-blank '{TEXT_FIELD}' documents)")
    return [docs[i] for i in keep], [names[i] for i in keep]


def _split_docs(name: str, docs: list[str], names: list[str], heldout_frac: float, seed: int) -> Corpus:
    n = len(docs)
    if n == 1:
        text = docs[0]
        cut = int(len(text) * (1.0 - heldout_frac))
        # move the cut to a nearby line break (within 5 % of the text) so no line is split
        nl = text.rfind("\n", max(0, cut - len(text) // 20), cut)
        if nl > 0:
            cut = nl + 1
        train, held = text[:cut], text[cut:]
        if not train.strip() or not held.strip():
            raise DataError(f"corpus {name} is a single document of {len(text)} characters, too short to hold out "
                            f"{heldout_frac:.0%} of it")
        return Corpus(name, [train], [held], [f"{names[0]} (last {heldout_frac:.0%})"])
    n_held = min(n - 1, max(1, round(n * heldout_frac)))
    held_idx = set(int(i) for i in np.random.default_rng(seed).permutation(n)[:n_held])
    train = [d for i, d in enumerate(docs) if i not in held_idx]
    held = sorted(held_idx)
    return Corpus(name, train, [docs[i] for i in held], [names[i] for i in held])
