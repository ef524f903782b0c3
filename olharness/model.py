"""``ol``: any checkpoint of ours (decoder, encoder-decoder, RNN) as an lm-eval model.

    lm_eval --model ol --model_args pretrained=RUN_DIR[,truncation=middle,max_length=N] ...

A ``TemplateLM`` on lm-eval's own ``Collator`` and rolling-window helpers, after ``lm_eval/models/huggingface.py``
without its distributed/PEFT machinery. Log-likelihoods run the network without its vocabulary head and apply the head
only where a request needs log-probabilities (8 continuation tokens after 500 of context cost 8 head rows).
``max_length`` defaults to the learned-PE table size, else ``8 * l_train`` (the longest context ``olh_ppl_len`` asks
for). Tokens: the checkpoint's sentencepiece model, no BOS; training joined documents with EOS, so EOS is also the
prefix of an empty context."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from olharness.lsm import LSMMixin
from olharness.tokens import middle_truncate, pad_batch
from trainer.errors import OLHError

log = logging.getLogger(__name__)

TRUNCATIONS = ("left", "middle")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAMPLING_KEYS = {"do_sample", "temperature", "top_k", "top_p", "until", "max_gen_toks"}
CPU_AUTO_BATCH = 16


def resolve_device(device: str | None) -> torch.device:
    """The requested torch device, or CPU (with a warning) when it is not available here."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise OLHError(f"ol: bad device '{device}': {e}") from None
    ok = (dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available())
          or (dev.type == "mps" and torch.backends.mps.is_available()))
    if not ok:
        log.warning("ol: device %s is not available here; using cpu", device)
        return torch.device("cpu")
    return dev


class OLM(LSMMixin, TemplateLM):
    def __init__(self, pretrained: str | None = None, device: str | None = None, batch_size: int | str | None = 1,
                 max_batch_size: int | None = 64, max_length: int | None = None, truncation: str = "left",
                 dtype: str = "float32", max_gen_toks: int | None = None, **unknown) -> None:
        super().__init__()
        if unknown:
            raise OLHError(f"ol: unknown model argument(s) {', '.join(sorted(unknown))}; valid: pretrained, max_length, "
                           "truncation, dtype, max_gen_toks (plus the CLI's device, batch_size, max_batch_size)")
        if not pretrained:
            raise OLHError("ol: give the run directory: --model_args pretrained=RUN_DIR")
        if truncation not in TRUNCATIONS:
            raise OLHError(f"ol: unknown truncation '{truncation}'; valid: {', '.join(TRUNCATIONS)}")
        if str(dtype) not in DTYPES:
            raise OLHError(f"ol: unknown dtype '{dtype}'; valid: {', '.join(DTYPES)}")
        from trainer.checkpoint import load_model
        self._device = resolve_device(device)
        model, self.run_config, self.tok = load_model(pretrained, "cpu")
        self.model = model.to(device=self._device, dtype=DTYPES[str(dtype)])
        self.pretrained = str(pretrained)
        self.backend = self.model.kind  # "causal" | "seq2seq"
        self.l_train = int(self.run_config.data.seq_len)
        bound = self.model.max_positions
        self.max_length = int(max_length) if max_length else (int(bound) if bound else 8 * self.l_train)
        if bound and self.max_length > bound:
            raise OLHError(f"ol: max_length={self.max_length} exceeds the model's max_positions={bound} (pe=learned)")
        self.truncation = truncation
        self.max_gen_toks = int(max_gen_toks) if max_gen_toks else min(256, self.max_length // 2)
        self.max_batch_size = int(max_batch_size or 64)
        bs = str(batch_size if batch_size is not None else 1)
        if bs.startswith("auto"):
            self.batch_size = self._detect_batch_size()
        elif bs.isdigit() and int(bs) > 0:
            self.batch_size = int(bs)
        else:
            raise OLHError(f"ol: batch_size must be a positive integer or 'auto', got '{batch_size}'")
        self.batch_sizes = {}  # what lm-eval's results record reads

    # ---------------------------------------------------------------- properties lm-eval reads
    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def tokenizer_name(self) -> str:
        return self.pretrained.replace("/", "__")

    def get_model_info(self) -> dict:
        return {"model_arch": self.run_config.model.arch, "model_pe": self.run_config.model.pe, "l_train": self.l_train,
                "model_num_parameters": sum(p.numel() for p in self.model.parameters())}

    def _detect_batch_size(self) -> int:
        """On a GPU: the largest batch of full-length windows with every position scored (the
        heaviest request, a rolling window) that fits; on CPU a fixed size (host memory is not
        probed: running out of it kills the process instead of raising)."""
        if self._device.type != "cuda":
            return min(CPU_AUTO_BATCH, self.max_batch_size)
        from accelerate.utils import find_executable_batch_size

        @find_executable_batch_size(starting_batch_size=self.max_batch_size)
        def probe(batch_size: int) -> int:
            x = torch.ones((batch_size, self.max_length), dtype=torch.long, device=self._device)
            with torch.inference_mode():
                h = self._hidden(x, torch.ones_like(x, dtype=torch.bool), x)
                F.log_softmax(self.model.output_head(h).float(), dim=-1)
            return batch_size

        return probe()

    # ---------------------------------------------------------------- tokens and the network
    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tok.encode(string)

    def tok_decode(self, tokens) -> str:
        return self.tok.decode(tokens)

    def _truncate(self, ids: list[int], budget: int) -> list[int]:
        if len(ids) <= budget:
            return ids
        if self.truncation == "middle" and budget >= 2:
            return middle_truncate(ids, budget)
        return ids[len(ids) - budget:]

    def _hidden(self, inp: torch.Tensor, enc_mask: torch.Tensor | None = None, dec: torch.Tensor | None = None):
        """Final hidden states (B, T, D) before the vocabulary head. Causal: of inp. Seq2seq: inp is
        the encoder input (enc_mask its padding), dec the decoder input."""
        if self.backend == "causal":
            return self.model(inp, head=False)
        return self.model(inp, dec, enc_mask=enc_mask, head=False)

    def _logprobs_at(self, h: torch.Tensor, spans: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Log-softmax of the head at positions [a, b) of each row of h: one (b - a, V) tensor per row.
        The head runs once, on the selected rows only."""
        rows = torch.cat([torch.full((b - a,), i, dtype=torch.long) for i, (a, b) in enumerate(spans)])
        cols = torch.cat([torch.arange(a, b) for a, b in spans])
        logp = F.log_softmax(self.model.output_head(h[rows.to(h.device), cols.to(h.device)]).float(), dim=-1)
        return list(logp.split([b - a for a, b in spans]))

    # ---------------------------------------------------------------- loglikelihood
    def _batch_inputs(self, chunk) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[tuple[int, int]]]:
        """(input ids, mask, decoder ids or None, span of scored positions per row) of one batch."""
        inps, decs, spans = [], [], []
        for _, ctx, cont in chunk:
            if not ctx or not cont or len(cont) > self.max_length:
                raise OLHError(f"ol: a loglikelihood request needs a context and 1..{self.max_length} continuation tokens")
            if self.backend == "causal":
                inp = (self._truncate(ctx, self.max_length + 1 - len(cont)) + cont)[:-1]
                inps.append(inp)
                spans.append((len(inp) - len(cont), len(inp)))
            else:
                inps.append(self._truncate(ctx, self.max_length))
                decs.append([self.tok.bos_id] + cont[:-1])
                spans.append((0, len(cont)))
        x, mask = pad_batch(inps, self.tok.pad_id, self._device)
        dec = pad_batch(decs, self.tok.pad_id, self._device)[0] if decs else None
        return x, mask, dec, spans

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        res = []
        causal = self.backend == "causal"
        coll = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])),
                        group_by="contexts" if causal else None, group_fn=lambda r: r[1] + r[2][:-1])
        pbar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running loglikelihood requests")
        for chunk in coll.get_batched(n=override_bs or self.batch_size):
            x, mask, dec, spans = self._batch_inputs(chunk)
            with torch.inference_mode():
                logps = self._logprobs_at(self._hidden(x, mask, dec), spans)
            for (req_str, ctx, cont), lp in zip(chunk, logps):
                lp = lp[None]  # (1, len(cont), V)
                greedy = lp.argmax(-1)
                for req_str, cont_toks, lp in coll.get_cache(req_str=req_str, cxt_toks=ctx, cont_toks=cont, logits=lp):
                    c = torch.tensor(cont_toks, dtype=torch.long, device=lp.device)[None]
                    answer = (float(lp[:, -c.shape[1]:].gather(2, c[..., None]).sum()),
                              bool((greedy[:, -c.shape[1]:] == c).all()))
                    res.append(answer)
                    if req_str is not None:
                        self.cache_hook.add_partial("loglikelihood", req_str, answer)
                    pbar.update(1)
        pbar.close()
        return coll.get_original(res)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """lm-eval's disjoint rolling windows of max_length tokens; all windows of all requests are
        scored together (batched), then summed per request."""
        windows, owner = [], []
        for i, req in enumerate(requests):
            (string,) = req.args
            for w in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None,) + w)
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[i] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---------------------------------------------------------------- generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        coll = Collator([r.args for r in requests], sort_fn=lambda a: (-len(self.tok_encode(a[0])), a[0]),
                        group_by="gen_kwargs", group_fn=lambda a: a[1])
        res = []
        pbar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running generate_until requests")
        for chunk in coll.get_batched(n=1):
            for context, gen_kwargs in chunk:
                s = self._generate_one(context, gen_kwargs)
                res.append(s)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), s)
                pbar.update(1)
        pbar.close()
        return coll.get_original(res)

    def _step(self, tokens: list[int] | None, cache, prompt: list[int] | None = None) -> torch.Tensor:
        """Next-token logits (V,) after feeding `tokens` (causal) or decoder `tokens` after the encoder
        read `prompt` (seq2seq, first call only); the cache keeps everything fed so far."""
        t = torch.tensor([tokens], device=self._device)
        if self.backend == "causal":
            h = self.model(t, cache=cache, head=False)
        else:
            enc = torch.tensor([prompt], device=self._device) if prompt is not None else None
            h = self.model(enc, t, cache=cache, head=False)
        return self.model.output_head(h[0, -1]).float()

    def _generate_one(self, context: str, gen_kwargs: dict) -> str:
        kw = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        until = handle_stop_sequences(kw.pop("until", None), eos=self.tok_decode([self.eot_token_id]))
        n_new = int(kw.pop("max_gen_toks"))
        extra = set(kw) - SAMPLING_KEYS
        if extra:
            log.warning("ol: ignoring generation argument(s) %s", ", ".join(sorted(extra)))
        ctx = self.tok_encode(context) or [self.prefix_token_id]
        # a stop string first appears in the text of the last few tokens (every token has >= 1 char)
        tail = 2 * max((len(u) for u in until), default=0) + 4
        cache, out = self.model.new_cache(), []
        with torch.inference_mode():
            if self.backend == "causal":
                if self.max_length - n_new < 1:
                    raise OLHError(f"ol: max_gen_toks={n_new} leaves no room for a prompt in max_length={self.max_length}")
                logits = self._step(self._truncate(ctx, self.max_length - n_new), cache)
            else:
                logits = self._step([self.tok.bos_id], cache, prompt=self._truncate(ctx, self.max_length))
            for _ in range(n_new):
                nxt = self._pick(logits, kw)
                if nxt == self.eot_token_id:
                    break
                out.append(nxt)
                if any(u and u in self.tok_decode(out[-tail:]) for u in until):
                    break
                logits = self._step([nxt], cache)
        return postprocess_generated_text(self.tok_decode(out), until, None)

    @staticmethod
    def _pick(logits: torch.Tensor, kw: dict) -> int:
        temperature = float(kw.get("temperature", 0.0) or 0.0)
        if not kw.get("do_sample") or temperature <= 0.0:
            return int(logits.argmax())
        logits = logits / temperature
        top_k = int(kw.get("top_k") or 0)
        if top_k > 0:
            kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        top_p = float(kw.get("top_p") or 1.0)
        if top_p < 1.0:
            sorted_logits, idx = torch.sort(logits, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
            logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, idx, drop), float("-inf"))
        return int(torch.multinomial(logits.softmax(-1), 1))

    # ---------------------------------------------------------------- lsm (olharness.lsm.LSMMixin)
    def _lsm_encode(self, text: str) -> list[int]:
        return self.tok_encode(text)

    def _lsm_forward(self, views: list[list[int]]) -> torch.Tensor:
        x, mask = pad_batch(views, self.tok.pad_id, self._device)
        with torch.inference_mode():
            if self.backend == "causal":
                h = self.model(x, head=False)[torch.arange(len(views), device=x.device), mask.sum(1) - 1]
            else:
                dec = torch.full((len(views), 1), self.tok.bos_id, dtype=torch.long, device=x.device)
                h = self.model(x, dec, enc_mask=mask, head=False)[:, 0]
            return self.model.output_head(h)
