"""Long-Short Misalignment (LSM) for lm-eval models, exact and approximate (docs/method.md).

``LSMMixin.lsm(requests)`` answers the custom request type ``lsm`` of the ``olh_lsm`` tasks:
``(text, l_short, l_long[, options])`` -> ``{"lsm": D, "lsm_symkl": symmetric KL}``. A model gets it by
mixing ``LSMMixin`` in and implementing ``_lsm_encode`` and ``_lsm_forward`` (``ol`` and ``hf-lsm``).
``approx_divergences`` is ``olh_lsm_ll``'s loglikelihood-only approximation for any lm-eval model.

For an ``hf`` model whose tokenizer adds BOS each view is ``[BOS] + suffix`` (it never saw text
without it); ``ol`` models were trained on windows cut anywhere, so their views are bare suffixes.
``HFLSM`` is built on first access (PEP 562 ``__getattr__``), so importing this does not import transformers."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from trainer.alignment.divergences import build_divergence
from trainer.errors import OLHError

DEFAULT_DIVERGENCE = "sce"
#: metric reported beside the chosen divergence: SCE minus its two entropy terms, so a reader can tell
#: a drift of the predictions from a change of their entropy
SIDE_DIVERGENCE = "sym_kl"


def check_divergence(name: str, kl_direction: str = "long_short") -> None:
    """Fail with the list of valid names for an unknown divergence or KL direction."""
    build_divergence(name, kl_direction)


def parse_lsm_args(args: Sequence) -> tuple[str, int, int, dict]:
    """``(text, l_short, l_long[, options])`` -> validated tuple; OLHError on malformed input."""
    if len(args) not in (3, 4) or not isinstance(args[0], str):
        raise OLHError(f"an lsm request takes (text, l_short, l_long[, options]); got {len(args)} argument(s)")
    text, l_short, l_long = args[0], int(args[1]), int(args[2])
    opts = dict(args[3]) if len(args) == 4 and args[3] else {}
    if not 1 <= l_short <= l_long:
        raise OLHError(f"an lsm request needs 1 <= l_short <= l_long; got l_short={l_short}, l_long={l_long}")
    return text, l_short, l_long, opts


def pair_divergences(long_logits: torch.Tensor, short_logits: torch.Tensor, divergence: str = DEFAULT_DIVERGENCE,
                     kl_direction: str = "long_short") -> list[dict[str, float]]:
    """``[{"lsm": D(long, short), "lsm_symkl": symKL(long, short)}]``, one per row of the (N, V) logits:
    each divergence runs once over the whole batch of pairs, in float64 (the divergence of two
    near-equal distributions is otherwise mostly float32 rounding)."""
    lp, lq = (F.log_softmax(x.double(), dim=-1) for x in (long_logits, short_logits))
    main = build_divergence(divergence, kl_direction, on_logits=False)(lp, lq).tolist()
    side = build_divergence(SIDE_DIVERGENCE, on_logits=False)(lp, lq).tolist()
    return [{"lsm": m, "lsm_symkl": x} for m, x in zip(main, side)]


class LSMMixin:
    """Adds ``lsm(requests)`` to an lm-eval model; see the module docstring for the contract."""

    def _lsm_encode(self, text: str) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def _lsm_forward(self, views: list[list[int]]) -> torch.Tensor:  # pragma: no cover - interface
        """Next-token logits (B, V) at the last position of each view (a batch of id lists)."""
        raise NotImplementedError

    def _lsm_batch_size(self) -> int:
        bs = getattr(self, "batch_size", 1)
        return int(bs) if str(bs).isdigit() else 8

    def lsm(self, requests, disable_tqdm: bool = False) -> list[dict[str, float]]:
        from lm_eval.models.utils import Collator
        from tqdm import tqdm
        parsed = [parse_lsm_args(r.args) for r in requests]
        views: list[list[int]] = []
        for text, l_short, l_long, opts in parsed:
            check_divergence(opts.get("divergence", DEFAULT_DIVERGENCE), opts.get("kl_direction", "long_short"))
            ids = self._lsm_encode(text)
            if len(ids) < l_long:
                raise OLHError(f"lsm request: the text encodes to {len(ids)} tokens, fewer than l_long={l_long}; "
                               f"give longer texts (or a tokenizer matching the model in --metadata)")
            views += [ids[len(ids) - l_short:], ids[len(ids) - l_long:]]
        # longest first (Collator's order), batched, then back to request order
        coll = Collator(views, sort_fn=lambda v: (-len(v), tuple(v)))
        out: list[torch.Tensor] = []
        pbar = tqdm(total=len(views), desc="Running lsm requests", disable=disable_tqdm or getattr(self, "rank", 0) != 0)
        for chunk in coll.get_batched(n=max(1, self._lsm_batch_size())):
            out.extend(self._lsm_forward(list(chunk)).float().cpu().unbind(0))
            pbar.update(len(chunk))
        pbar.close()
        last = coll.get_original(out)
        long, short = torch.stack(last[1::2]), torch.stack(last[0::2])
        by_opts: dict[tuple[str, str], list[int]] = {}
        for i, (_, _, _, opts) in enumerate(parsed):
            key = (opts.get("divergence", DEFAULT_DIVERGENCE), opts.get("kl_direction", "long_short"))
            by_opts.setdefault(key, []).append(i)
        results: list[dict[str, float]] = [{}] * len(parsed)
        for (name, direction), idx in by_opts.items():
            for i, r in zip(idx, pair_divergences(long[idx], short[idx], name, direction)):
                results[i] = r
        return results


# ---------- loglikelihood-only approximation (olh_lsm_ll) ---------------------------------------------------
def candidate_distribution(logprobs: Sequence[float]) -> torch.Tensor:
    """Log-probabilities over K candidates + one pooled "other" outcome (mass ``1 - sum p``). Multi-token
    candidates need not sum to <= 1, so "other" is clamped at 1e-12 and the whole renormalized."""
    lp = torch.tensor([float(x) for x in logprobs], dtype=torch.float64)
    p = lp.exp()
    other = torch.clamp(1.0 - p.sum(), min=1e-12)
    full = torch.cat([p, other[None]])
    return (full / full.sum()).log()


def approx_divergences(long_lls: Sequence[float], short_lls: Sequence[float], divergence: str = DEFAULT_DIVERGENCE,
                       kl_direction: str = "long_short") -> dict[str, float]:
    """The ``pair_divergences`` of the two candidate distributions (log-probabilities act as logits:
    log_softmax of a normalized log-distribution is itself)."""
    if len(long_lls) != len(short_lls) or not long_lls:
        raise OLHError("approximate LSM needs the same non-empty candidate set for both views")
    (out,) = pair_divergences(candidate_distribution(long_lls)[None], candidate_distribution(short_lls)[None],
                              divergence, kl_direction)
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}


# ---------- hf-lsm: lm-eval's HFLM + the exact metric -------------------------------------------------------
def _build_hflsm():
    from lm_eval.models.huggingface import HFLM

    class HFLSM(LSMMixin, HFLM):
        """lm-eval's ``hf`` model with the exact ``lsm`` request (``--model hf-lsm``); every other
        behaviour, argument and result is HFLM's."""

        def _lsm_prefix(self) -> list[int]:
            add = self.add_bos_token
            if add is None:  # the tokenizer's own default: does it put BOS in front?
                with_special = self.tokenizer.encode("a")
                bare = self.tokenizer.encode("a", add_special_tokens=False)
                add = (len(with_special) > len(bare) and self.tokenizer.bos_token_id is not None
                       and with_special[0] == self.tokenizer.bos_token_id)
            return [self.tokenizer.bos_token_id] if add and self.backend == "causal" else []

        def _lsm_encode(self, text: str) -> list[int]:
            return self.tokenizer.encode(text, add_special_tokens=False)

        def _lsm_forward(self, views: list[list[int]]) -> torch.Tensor:
            from olharness.tokens import pad_batch
            pad = self.tokenizer.pad_token_id or 0
            if self.backend == "causal":  # right padding: causal attention never sees it
                inp, mask = pad_batch([self._lsm_prefix() + v for v in views], pad, self.device)
                logits = self._model_call(inp)
                return logits[torch.arange(len(views), device=logits.device), mask.sum(1).to(logits.device) - 1]
            # seq2seq: the encoder reads the suffix, the decoder's first prediction is g
            inp, mask = pad_batch(views, pad, self.device)
            labels = torch.full((len(views), 1), self.eot_token_id, dtype=torch.long, device=self.device)
            return self._model_call(inp, attn_mask=mask.long(), labels=labels)[:, 0]

        def _lsm_batch_size(self) -> int:
            bs = self.batch_size
            return int(bs) if str(bs).isdigit() else self._detect_batch_size()

    HFLSM.__module__ = __name__
    return HFLSM


def __getattr__(name: str):
    if name == "HFLSM":
        cls = _build_hflsm()
        globals()["HFLSM"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
