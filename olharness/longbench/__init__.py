"""LongBench-E (THUDM protocol) and the olh mini long-context suite for lm-evaluation-harness.

- ``protocol``: datasets, categories, THUDM prompt templates and budgets, length buckets, scoring
  (``scorer_e`` reproduces THUDM ``eval.py --e``).
- ``metrics``: QA-F1, ROUGE-L, classification, count, retrieval, code edit similarity.
- ``loading``: THUDM-format ``<dataset>_e.jsonl`` reading and validation.
- ``task``: the lm-eval task classes used by ``tasks/longbench_e`` and ``tasks/mini_lc``.
- ``mini_lc``: the generator of our own mini long-context suite (not LongBench) and the seeded
  choices of its likelihood-scored multiple-choice twin (``olh_mini_lc_mc``).
- ``hf_mid``: ``hf-mid``, lm-eval's ``hf`` model with THUDM's middle truncation of prompts.

Middle truncation itself is ``olharness.tokens.middle_truncate``.
"""
