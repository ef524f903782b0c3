"""LongBench-E in lm-eval: protocol data, prompts, buckets, loading/validation, end-to-end scores."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from pathlib import Path

import pytest

from olharness.longbench import protocol
from olharness.longbench.loading import DataError, FIXTURE_DIR, load_longbench_rows, read_rows

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO / "tasks" / "longbench_e"
PREDICTIONS = json.loads((FIXTURE_DIR / "fixture_predictions.json").read_text())


# ------------------------------------------------------------------------------- protocol data
def test_thudm_files_are_verbatim_copies():
    """sha256 of THUDM LongBench v1 ``config/dataset2prompt.json`` and ``dataset2maxlen.json``."""
    data = protocol.DATA_DIR
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.glob("*.json")}
    assert digest == {
        "dataset2prompt.json": "56d22ad4f382169c2b8a11ff4c982a4a1bea096c8152b0f0b85b64686b157c30",
        "dataset2maxlen.json": "72966b3c0933e214591637fb085798c5e687ebff4ddaab5d99bbc31120532022",
    }
    assert (data / "LICENSE-THUDM-LongBench").read_text().startswith("MIT License")


def test_datasets_categories_and_budgets():
    assert protocol.DATASETS == (
        "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "gov_report", "multi_news", "trec",
        "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p",
    )  # fmt: skip
    budgets = {d: protocol.generation_kwargs(d)["max_gen_toks"] for d in protocol.DATASETS}
    assert budgets == {
        "qasper": 128, "multifieldqa_en": 64, "hotpotqa": 32, "2wikimqa": 32, "gov_report": 512,
        "multi_news": 512, "trec": 64, "triviaqa": 32, "samsum": 128, "passage_count": 32,
        "passage_retrieval_en": 32, "lcc": 64, "repobench-p": 64,
    }  # fmt: skip
    for d in protocol.DATASETS:
        kw = protocol.generation_kwargs(d)
        assert kw["do_sample"] is False and kw["temperature"] == 0.0
        assert kw["until"] == (["\n"] if d == "samsum" else [])
    assert protocol.base_name("repobench-p_e") == "repobench-p"
    with pytest.raises(ValueError, match="unknown LongBench-E dataset"):
        protocol.base_name("narrativeqa")  # LongBench, but not LongBench-E


@pytest.mark.parametrize(
    "length, bucket",
    [(0, "0-4k"), (3999, "0-4k"), (4000, "4-8k"), (7999, "4-8k"), (8000, "8k+"), (31000, "8k+")],
)
def test_length_buckets(length, bucket):
    assert protocol.length_bucket(length) == bucket


def test_fixtures_cover_every_dataset_and_bucket_edge():
    for d in protocol.DATASETS:
        rows = read_rows(FIXTURE_DIR / f"{d}_e.jsonl", f"{d}_e")
        assert {3999, 4000, 7999, 8000} <= {r["length"] for r in rows}, d


# --------------------------------------------------------------------------------------- prompts
def test_rendered_prompts_equal_templates():
    """Every fixture row, through the lm-eval task, gives ``template.format(**row)`` exactly."""
    from lm_eval.tasks import TaskManager

    templates = json.loads((protocol.DATA_DIR / "dataset2prompt.json").read_text())
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    loaded = tm.load(["olh_longbench_e"])
    assert len(loaded["tasks"]) == 13
    for name, task in loaded["tasks"].items():
        base = name.removeprefix("olh_longbench_e_")
        for doc in task.test_docs():
            expected = templates[base].format(**doc)
            assert task.doc_to_text(doc) == expected
            assert task.fewshot_context(doc, num_fewshot=0) == expected  # nothing added by lm-eval


def test_template_details_are_kept():
    row = {"context": "CTX {input} {0}", "input": "Q"}
    # THUDM's own spacing quirks survive
    assert "\n\nArticle: CTX {input} {0}\n\n Answer the question based" in protocol.render_prompt("qasper", row)
    assert protocol.render_prompt("passage_count", row).endswith("The final answer is: ")
    lcc = "Please complete the code given below. \nCTX {input} {0}Next line of code:\n"
    assert protocol.render_prompt("lcc", row) == lcc
    assert protocol.render_prompt("repobench-p", row).endswith("CTX {input} {0}QNext line of code:\n")
    assert protocol.render_prompt("trec", row).endswith("examples of questions.\n\nCTX {input} {0}\nQ")


# --------------------------------------------------------------------------------------- loading
def _write(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _good_row(**kw):
    row = {"input": "q", "context": "c", "answers": ["a"], "length": 10, "dataset": "qasper_e",
           "language": "en", "all_classes": None, "_id": "x"}  # fmt: skip
    row.update(kw)
    return row


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", r"qasper_e.jsonl:2: not valid JSON"),
        ({k: v for k, v in _good_row().items() if k != "answers"}, r"qasper_e.jsonl:2: missing field 'answers'"),
        (_good_row(length="4000"), r"qasper_e.jsonl:2: field 'length' must be an integer, got str"),
        (_good_row(length=True), r"field 'length' must be an integer, got bool"),
        (_good_row(answers="a"), r"field 'answers' must be a list, got str"),
        (_good_row(answers=[]), r"field 'answers' must be a non-empty list of strings"),
        (_good_row(answers=[1]), r"field 'answers' must be a non-empty list of strings"),
        (_good_row(all_classes="x"), r"field 'all_classes' must be a list or null"),
        (_good_row(_id=3), r"field '_id' must be a string"),
        ([1, 2], r"qasper_e.jsonl:2: expected a JSON object"),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, bad, message):
    path = _write(tmp_path / "qasper_e.jsonl", [_good_row(), bad])
    with pytest.raises(DataError, match=message):
        read_rows(path, "qasper_e")


def test_dataset_specific_checks(tmp_path):
    p = _write(tmp_path / "trec_e.jsonl", [_good_row(dataset="trec_e")])
    with pytest.raises(DataError, match=r"trec_e.jsonl:1: field 'all_classes' must list the classes"):
        read_rows(p, "trec_e")
    p = _write(tmp_path / "passage_retrieval_en_e.jsonl", [_good_row(answers=["12"])])
    with pytest.raises(DataError, match=r":1: field 'answers': '12' has no 'Paragraph <number>'"):
        read_rows(p, "passage_retrieval_en_e")
    (tmp_path / "empty_e.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty_e.jsonl: file has no rows"):
        read_rows(tmp_path / "empty_e.jsonl", "qasper_e")


def test_missing_file_and_bad_dir(tmp_path):
    shutil.copy(FIXTURE_DIR / "qasper_e.jsonl", tmp_path)
    msg = r"hotpotqa_e.jsonl: LongBench-E file for 'hotpotqa' not found \(found: qasper_e.jsonl\)"
    with pytest.raises(DataError, match=msg):
        load_longbench_rows("hotpotqa", {"longbench_dir": str(tmp_path)})
    with pytest.raises(DataError, match="is not a directory"):
        load_longbench_rows("qasper", {"longbench_dir": str(tmp_path / "nope")})
    rows, source = load_longbench_rows("qasper", {"longbench_dir": str(tmp_path)})
    assert source == f"dir:{tmp_path / 'qasper_e.jsonl'}" and len(rows) == 5


def test_env_var_and_fixture_warning(tmp_path, monkeypatch, caplog):
    shutil.copy(FIXTURE_DIR / "trec_e.jsonl", tmp_path)
    monkeypatch.setenv("OLH_LONGBENCH_DIR", str(tmp_path))
    assert load_longbench_rows("trec", {})[1].startswith("dir:")
    monkeypatch.delenv("OLH_LONGBENCH_DIR")
    with caplog.at_level(logging.WARNING):
        rows, source = load_longbench_rows("trec", None)
    assert source.startswith("fixtures:")
    assert "NOT LongBench-E results" in caplog.text


def test_task_reports_its_data_source(tmp_path):
    from lm_eval.tasks import TaskManager

    shutil.copy(FIXTURE_DIR / "lcc_e.jsonl", tmp_path)
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"longbench_dir": str(tmp_path)})
    task = tm.load(["olh_longbench_e_lcc"])["tasks"]["olh_longbench_e_lcc"]
    assert task.config.metadata["data_source"] == f"dir:{tmp_path / 'lcc_e.jsonl'}"
    with pytest.raises(DataError, match="qasper_e.jsonl: LongBench-E file for 'qasper' not found"):
        tm.load(["olh_longbench_e_qasper"])


# ------------------------------------------------------------------------------------ end to end
def _f(p, r):
    return 2.0 * (p * r / (p + r + 1e-8))


F11 = _f(1, 1)
# Per-row scores by bucket, derived by hand (see ``why`` in fixture_predictions.json).
GOLDEN_ROWS = {
    "qasper": {"0-4k": [1], "4-8k": [1, 1 / 3], "8k+": [0, 1]},
    "multifieldqa_en": {"0-4k": [1], "4-8k": [0.4, 0.8], "8k+": [0]},
    "hotpotqa": {"0-4k": [2 / 3], "4-8k": [1, 0.5], "8k+": [2 / 3]},
    "2wikimqa": {"0-4k": [1], "4-8k": [1, 0], "8k+": [1]},
    "gov_report": {"0-4k": [F11], "4-8k": [0, _f(1, 2 / 3)], "8k+": [0]},
    "multi_news": {"0-4k": [_f(1, 3 / 5)], "4-8k": [0, F11], "8k+": [_f(1 / 2, 1 / 2)]},
    "trec": {"0-4k": [1], "4-8k": [0.5, 0], "8k+": [0.5]},
    "triviaqa": {"0-4k": [1], "4-8k": [1, 0.4], "8k+": [0]},
    "samsum": {"0-4k": [F11], "4-8k": [0, _f(3 / 4, 3 / 4)], "8k+": [_f(3 / 4, 1)]},
    "passage_count": {"0-4k": [1, 1], "4-8k": [0.5, 0], "8k+": [2 / 3, 0]},
    "passage_retrieval_en": {"0-4k": [1], "4-8k": [0, 0.5], "8k+": [1]},
    "lcc": {"0-4k": [0.91], "4-8k": [1, 0], "8k+": [1]},
    "repobench-p": {"0-4k": [1], "4-8k": [0.84, 0], "8k+": [0]},
}


def _golden(ds: str) -> dict[str, float]:
    rows = GOLDEN_ROWS[ds]
    out = {f"score_{b}": 100 * sum(v) / len(v) for b, v in rows.items()}
    everything = [x for v in rows.values() for x in v]
    out["score"] = 100 * sum(everything) / len(everything)
    return out


class FixtureLM:
    """A deterministic stand-in model: answers each prompt with the canned prediction of the
    fixture row whose id appears in the prompt, and records the generation arguments."""

    def __new__(cls):
        from lm_eval.api.model import LM

        class _FixtureLM(LM):
            def __init__(self):
                super().__init__()
                self.calls = {}

            def generate_until(self, requests, disable_tqdm: bool = False):
                out = []
                for req in requests:
                    prompt, kwargs = req.args
                    rid = re.search(r"olh-fixture-[\w-]+?-\d+", prompt).group(0)
                    self.calls[rid] = (prompt, kwargs)
                    out.append(PREDICTIONS[rid]["prediction"])
                return out

            def loglikelihood(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

        return _FixtureLM()


@pytest.fixture(scope="module")
def e2e():
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = FixtureLM()
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=["olh_longbench_e"], task_manager=tm, bootstrap_iters=0, log_samples=False)
    return out, lm


def test_e2e_per_dataset_golden_scores(e2e):
    out, lm = e2e
    results = out["results"]
    for ds in protocol.DATASETS:
        got = results[f"olh_longbench_e_{ds}"]
        for metric, value in _golden(ds).items():
            assert got[f"{metric},none"] == pytest.approx(value, abs=1e-9), (ds, metric)
    assert len(lm.calls) == 55  # every fixture row was asked once
    for rid, (prompt, kwargs) in lm.calls.items():
        ds = rid.removeprefix("olh-fixture-").rsplit("-", 1)[0]
        assert kwargs == protocol.generation_kwargs(ds)


def test_e2e_groups_are_unweighted_means_over_datasets(e2e):
    out, _ = e2e
    results = out["results"]
    golden = {ds: _golden(ds) for ds in protocol.DATASETS}
    for cat, members in protocol.CATEGORIES.items():
        got = results[f"olh_longbench_e_{cat}"]
        for metric in ("score", "score_0-4k", "score_4-8k", "score_8k+"):
            want = sum(golden[d][metric] for d in members) / len(members)
            assert got[f"{metric},none"] == pytest.approx(want, abs=1e-9), (cat, metric)
    overall = results["olh_longbench_e"]
    for metric in ("score", "score_0-4k", "score_4-8k", "score_8k+"):
        want = sum(golden[d][metric] for d in protocol.DATASETS) / 13  # datasets, not categories
        assert overall[f"{metric},none"] == pytest.approx(want, abs=1e-9)
    # regression goldens (the same numbers, written out)
    assert overall["score,none"] == pytest.approx(59.8428, abs=1e-4)
    assert overall["score_0-4k,none"] == pytest.approx(94.8205, abs=1e-4)
    assert overall["score_4-8k,none"] == pytest.approx(47.3974, abs=1e-4)
    assert overall["score_8k+,none"] == pytest.approx(48.9011, abs=1e-4)
    # the fixtures have 4 to 6 rows per dataset, so a size-weighted mean would differ
    sizes = {d: sum(len(v) for v in GOLDEN_ROWS[d].values()) for d in protocol.DATASETS}
    weighted = sum(golden[d]["score"] * sizes[d] for d in sizes) / sum(sizes.values())
    assert abs(weighted - overall["score,none"]) > 1e-3


def test_e2e_matches_the_independent_thudm_oracle(tmp_path):
    """Every case of THUDM's own scorer (tests/assets/longbench/thudm_oracle.jsonl) through the whole
    lm-eval pipeline (prompt, generation, first-line cut, metric, aggregation): each dataset's score
    is 100 x the mean of THUDM's per-case scores."""
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    cases = [json.loads(x) for x in (FIXTURE_DIR / "thudm_oracle.jsonl").read_text().splitlines() if x.strip()]
    for ds in protocol.DATASETS:
        with (tmp_path / f"{ds}_e.jsonl").open("w") as fh:
            for i, c in enumerate(cases):
                if c["dataset"] == ds:
                    fh.write(json.dumps({"input": "q", "context": f"oracle-case-{i}-", "answers": c["answers"],
                                         "length": 100, "dataset": f"{ds}_e", "language": "en",
                                         "all_classes": c["all_classes"], "_id": str(i)}) + "\n")

    class OracleLM(LM):
        def generate_until(self, requests, disable_tqdm: bool = False):
            return [cases[int(re.search(r"oracle-case-(\d+)-", r.args[0]).group(1))]["prediction"] for r in requests]

        loglikelihood = loglikelihood_rolling = None

    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"longbench_dir": str(tmp_path)})
    res = lm_eval.simple_evaluate(model=OracleLM(), tasks=["olh_longbench_e"], task_manager=tm, bootstrap_iters=0,
                                  log_samples=False)["results"]
    for ds in protocol.DATASETS:
        want = [c["thudm_score"] for c in cases if c["dataset"] == ds]
        assert len(want) == 40
        assert res[f"olh_longbench_e_{ds}"]["score,none"] == pytest.approx(100 * sum(want) / 40, abs=1e-9), ds


def test_empty_bucket_is_nan(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    lines = (FIXTURE_DIR / "trec_e.jsonl").read_text().splitlines()[:2]  # lengths 3999, 4000
    (tmp_path / "trec_e.jsonl").write_text("\n".join(lines) + "\n")
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"longbench_dir": str(tmp_path)})
    out = lm_eval.simple_evaluate(
        model=FixtureLM(), tasks=["olh_longbench_e_trec"], task_manager=tm, bootstrap_iters=0, log_samples=False
    )
    res = out["results"]["olh_longbench_e_trec"]
    assert res["score_0-4k,none"] == 100.0 and res["score_4-8k,none"] == 50.0
    assert math.isnan(res["score_8k+,none"])
    assert res["score,none"] == 75.0


def test_score_prediction_dir(tmp_path):
    rows = read_rows(FIXTURE_DIR / "passage_count_e.jsonl", "passage_count_e")
    with (tmp_path / "passage_count.jsonl").open("w") as fh:
        for r in rows:
            fh.write(json.dumps({"pred": PREDICTIONS[r["_id"]]["prediction"], "answers": r["answers"],
                                 "all_classes": None, "length": r["length"]}) + "\n")  # fmt: skip
    assert protocol.score_prediction_dir(tmp_path) == {"passage_count": {"0-4k": 100.0, "4-8k": 25.0, "8k+": 33.33}}


# ------------------------------------------------------------------------------------------- hub
def test_hub_download_is_extracted_once(tmp_path, monkeypatch):
    """``longbench_dir: hub`` fetches THUDM's data.zip (faked here) and reads the files inside."""
    import zipfile

    import huggingface_hub

    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(FIXTURE_DIR / "qasper_e.jsonl", "data/qasper_e.jsonl")
    calls = []

    def fake_download(repo_id, filename, repo_type=None, **kw):
        calls.append((repo_id, filename, repo_type))
        return str(zpath)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rows, source = load_longbench_rows("qasper", {"longbench_dir": "hub"})
    assert calls == [("THUDM/LongBench", "data.zip", "dataset")]
    assert source.startswith("hub:") and source.endswith("data/qasper_e.jsonl") and len(rows) == 5
    assert load_longbench_rows("qasper", {"longbench_dir": "HUB"})[0] == rows


def test_hub_failure_is_one_clear_error(monkeypatch):
    import huggingface_hub

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(DataError, match=r"could not download data.zip from the hub dataset THUDM/LongBench \(OSError"):
        load_longbench_rows("qasper", {"longbench_dir": "hub"})
