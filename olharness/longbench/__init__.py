"""LongBench-E (THUDM protocol: ``protocol``, ``metrics``, ``loading``) and our own mini long-context suite
(``mini_lc``) as lm-eval tasks (``task``), plus ``hf-mid`` (``hf_mid``)."""
