"""Write the offline LongBench-E fixtures: ``<dataset>_e.jsonl`` (THUDM schema) for all 13 datasets,
plus ``fixture_predictions.json`` (a canned prediction per row and its hand-derived score).

Contexts are a few lines (not thousands of words), but the ``length`` fields sit on every bucket
edge: 3999 (0-4k), 4000 and 7999 (4-8k), 8000 (8k+). Each context carries its row id
(``olh-fixture-<dataset>-<n>``) so a test model can look up its canned answer from the prompt.

Run ``python tests/assets/longbench/make_fixtures.py`` to regenerate (deterministic).
Hand derivations of the expected scores are in the ``why`` fields.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
LENGTHS = (3999, 4000, 7999, 8000)
TREC_CLASSES = [
    "Animal", "Date", "Other", "location", "Other location",
    "City", "Country", "Individual", "Reason", "Number of something",
]  # fmt: skip

# dataset -> list of (input, context body, answers, prediction, expected score, why[, length]);
# rows without a length get 3999, 4000, 7999, 8000 in turn. qasper and passage_count have extra rows
# so that datasets differ in size (a size-weighted group mean would then differ from ours).
ROWS: dict[str, list[tuple]] = {
    "qasper": [
        ("What dataset do they use?", "We train on the SQuAD dataset.", ["the SQuAD dataset", "SQuAD"],
         "SQuAD.", 1.0, "max over golds: 'squad' vs 'squad' = 1 (vs 'squad dataset' 2/3)"),
        ("Is the code released?", "No repository is mentioned.", ["unanswerable"],
         "Unanswerable", 1.0, "case and punctuation normalised"),
        ("Which encoders are compared?", "We compare BERT and ELMo encoders.", ["BERT and ELMo"],
         "They use BERT.", 1 / 3, "[they,use,bert] vs [bert,and,elmo]: 1 common, P=R=1/3"),
        ("Do they fine-tune?", "All encoders are fine-tuned.", ["yes"],
         "", 0.0, "empty prediction"),
        ("Is it open source?", "The code is closed.", ["no"], "No.", 1.0, "normalised exact", 20000),
    ],
    "multifieldqa_en": [
        ("What is the tallest structure in Paris?", "The Eiffel Tower is the tallest structure in Paris.",
         ["The Eiffel Tower"], "the eiffel tower!", 1.0, "articles and punctuation dropped"),
        ("When did it open?", "It opened in 1889.", ["1889"],
         "It opened in 1889", 0.4, "P=1/4, R=1, F1=0.4"),
        ("Who designed it?", "An engineer, Gustave Eiffel, designed it.", ["Gustave Eiffel"],
         "An engineer, Gustave Eiffel.", 0.8, "'an' dropped: [engineer,gustave,eiffel]: P=2/3, R=1"),
        ("In which city is it?", "It stands in Paris.", ["Paris"], "London", 0.0, "no overlap"),
    ],
    "hotpotqa": [
        ("Who was the 44th president?", "Passage 1: Barack Obama was the 44th president.",
         ["Barack Obama"], "Obama", 2 / 3, "P=1, R=1/2"),
        ("In which year was he born?", "Passage 1: Obama was born in 1961.", ["1961"],
         "1961", 1.0, "exact"),
        ("Are both cities in Hawaii?", "Passage 1: Honolulu and Hilo are in Hawaii.", ["yes"],
         "Yes, they are.", 0.5, "P=1/3, R=1"),
        ("Where was he born?", "Passage 1: He was born in Honolulu.", ["Honolulu"],
         "Honolulu, Hawaii", 2 / 3, "P=1/2, R=1"),
    ],
    "2wikimqa": [
        ("Which film came out first?", "Passage 1: The Matrix (1999).", ["The Matrix"],
         "Matrix", 1.0, "'the' dropped"),
        ("Are the directors from the same country?", "Passage 1: no.", ["no"], "no", 1.0, "exact"),
        ("Where was the director born?", "Passage 1: born in France.", ["France"], "", 0.0, "empty"),
        ("When was the founder born?", "Passage 1: born 1 January 1900.", ["1 January 1900"],
         "January 1, 1900", 1.0, "same bag of tokens {january,1,1900}"),
    ],
    "gov_report": [
        ("", "The agency reviewed the program in 2020.", ["The agency reviewed the program."],
         "The agency reviewed the program.", 2 / (2 + 1e-8), "identical: P=R=1, F=2PR/(P+R+1e-8)"),
        ("", "Costs were reviewed.", ["Costs were reviewed."], "", 0.0, "empty prediction: rouge raises -> 0"),
        ("", "Costs rose sharply in 2021.", ["costs rose sharply"],
         "costs rose", 2 * (2 / 3) / (5 / 3 + 1e-8), "LCS 2: R=2/3, P=1"),
        ("", "GAO recommends changes.", ["GAO recommends changes"],
         "No recommendations were made", 0.0, "no common word (case-sensitive)"),
    ],
    "multi_news": [
        ("", "A storm hit the coast. Thousands were evacuated.", ["Storm hits coast. Thousands evacuated."],
         "Storm hits coast.", 2 * 0.6 / (1.6 + 1e-8), "ref words 5, hyp 3, union LCS 3: R=3/5, P=1"),
        ("", "Nothing happened.", ["Nothing happened."], "...", 0.0, "only periods: no sentence -> 0"),
        ("", "Markets fell on Monday.", ["Markets fell"], "Markets fell", 2 / (2 + 1e-8), "identical"),
        ("", "Rates were left unchanged.", ["Rates unchanged"],
         "unchanged Rates", 2 * 0.25 / (1 + 1e-8), "LCS 1: P=R=1/2"),
    ],
    "trec": [
        ("Question: When was the treaty signed?\nType:", "Question: When did the war end?\nType: Date",
         ["Date"], "Date\nQuestion: Who won?", 1.0, "first line 'Date'; only match"),
        ("Question: Where is the Louvre?\nType:", "Question: Where is Kyoto?\nType: Other location",
         ["Other location"], "Other location", 0.5,
         "matches [Other, location, Other location]; removing 'Other' skips 'location' (THUDM quirk) -> 1/2"),
        ("Question: What is the capital of Peru?\nType:", "Question: What city hosts the games?\nType: City",
         ["City"], "\n\nCountry\nCity", 0.0, "first line after lstrip is 'Country'"),
        ("Question: Who painted it?\nType:", "Question: Who wrote Hamlet?\nType: Individual",
         ["Individual"], "Individual or Animal", 0.5, "two classes matched, gold among them -> 1/2"),
    ],
    "triviaqa": [
        ("Passage: Everest is the highest mountain.\nQuestion: Which is the highest mountain?\nAnswer:",
         "Passage: K2 is the second highest.\nQuestion: Which is second?\nAnswer: K2",
         ["Mount Everest", "Everest"], "Everest\nQuestion: next", 1.0, "first line; best gold 'Everest'"),
        ("Passage: Paris is the capital.\nQuestion: Capital of France?\nAnswer:",
         "Passage: Rome is the capital.\nQuestion: Capital of Italy?\nAnswer: Rome",
         ["Paris"], "\nParis", 1.0, "leading newline stripped"),
        ("Passage: Hamlet was written by William Shakespeare.\nQuestion: Who wrote Hamlet?\nAnswer:",
         "Passage: Dickens wrote Oliver Twist.\nQuestion: Who wrote it?\nAnswer: Dickens",
         ["William Shakespeare"], "Shakespeare wrote it", 0.4, "P=1/3, R=1/2"),
        ("Passage: The answer is 42.\nQuestion: What is the answer?\nAnswer:",
         "Passage: One plus one is two.\nQuestion: What is one plus one?\nAnswer: two",
         ["42"], "The answer\n42", 0.0, "first line 'The answer' only"),
    ],
    "samsum": [
        ("Dialogue: Amanda: I baked cookies.\nSummary: ", "Dialogue: Bob: hi\nSummary: Bob says hi.",
         ["Amanda baked cookies."], "Amanda baked cookies.\nDialogue: more", 2 / (2 + 1e-8), "first line identical"),
        ("Dialogue: Tom: I'll call back.\nSummary: ", "Dialogue: Ann: bye\nSummary: Ann leaves.",
         ["Tom will call back."], "\n", 0.0, "first line empty -> rouge raises -> 0"),
        ("Dialogue: Kim: noon?\nSummary: ", "Dialogue: Lee: ok\nSummary: Lee agrees.",
         ["They meet at noon."], "They meet at five.", 2 * 0.5625 / (1.5 + 1e-8), "LCS 3 of 4: P=R=3/4"),
        ("Dialogue: Jo: late!\nSummary: ", "Dialogue: Max: go\nSummary: Max leaves.",
         ["Jo is late."], "Jo is late. Sorry.", 2 * 0.75 / (1.75 + 1e-8), "hyp words 4, ref 3, LCS 3: R=1, P=3/4"),
    ],
    "passage_count": [
        ("", "Paragraph 1: a\n\nParagraph 2: b", ["12"], "12", 1.0, "exact"),
        ("", "Paragraph 1: a\n\nParagraph 2: a", ["7"], "There are 7 unique paragraphs out of 10", 0.5, "numbers [7,10]"),
        ("", "Paragraph 1: c", ["3"], "three", 0.0, "no digits"),
        ("", "Paragraph 1: d", ["25"], "25, 25 and 24", 2 / 3, "numbers [25,25,24]"),
        ("", "Paragraph 1: e", ["5"], "5 5", 1.0, "numbers [5,5]", 150),
        ("", "Paragraph 1: f", ["9"], "8", 0.0, "numbers [8]", 12345),
    ],
    "passage_retrieval_en": [
        ("An abstract about birds.", "Paragraph 4: Birds fly.", ["Paragraph 4"], "Paragraph 4", 1.0, "exact"),
        ("An abstract about fish.", "Paragraph 17: Fish swim.", ["Paragraph 17"], "Paragraph 7", 0.0, "7 != 17"),
        ("An abstract about cats.", "Paragraph 1: Cats sleep.", ["Paragraph 1"],
         "Paragraph 1 or Paragraph 11", 0.5, "numbers [1,11]"),
        ("An abstract about dogs.", "Paragraph 30: Dogs bark.", ["Paragraph 30"],
         "The answer is: Paragraph 30", 1.0, "numbers [30]"),
    ],
    "lcc": [
        ("", "def add(a, b):\n", ["return a+b"], "return a + b\n}", 0.91,
         "difflib: matches 'return a','+','b' = 10 chars of 22 -> 90.9 -> 91"),
        ("", "def f(y):\n", ["x = foo(y)"], "# compute x\nx = foo(y)\n", 1.0, "comment line skipped"),
        ("", "def g(x):\n", ["print(x)"], "```python\n// c\n# d", 0.0, "every line has ` // or # -> '' -> 0"),
        ("", "int main() {\n  return 0;\n", ["}"], "\n\n}", 1.0, "leading newlines stripped"),
    ],
    "repobench-p": [
        ("    def test_eq(self):\n", "import unittest\n", ["self.assertEqual(a, b)"],
         "self.assertEqual(a, b)", 1.0, "exact"),
        ("", "# utils\n", ["import os"], "import sys", 0.84, "matches 'import ','s' = 8 of 19 -> 84.2 -> 84"),
        ("x = 1\n", "def h():\n", ["return None"], "", 0.0, "empty prediction"),
        ("y = 0\n", "def inc(x):\n", ["x += 1  # inc"], "x += 1  # inc", 0.0,
         "prediction line has '#' so it is skipped -> '' -> 0 (THUDM quirk)"),
    ],
}


def main() -> None:
    predictions = {}
    for ds, rows in ROWS.items():
        lines = []
        for n, spec in enumerate(rows, 1):
            inp, body, answers, pred, score, why = spec[:6]
            length = spec[6] if len(spec) > 6 else LENGTHS[n - 1]
            rid = f"olh-fixture-{ds}-{n}"
            context = f"[{rid}]\n{body}"
            if ds in ("lcc", "repobench-p"):
                context = f"# {rid}\n{body}"
            row = {
                "input": inp,
                "context": context,
                "answers": answers,
                "length": length,
                "dataset": f"{ds}_e",
                "language": "en",
                "all_classes": TREC_CLASSES if ds == "trec" else None,
                "_id": rid,
            }
            lines.append(json.dumps(row, ensure_ascii=False))
            predictions[rid] = {"prediction": pred, "score": score, "why": why}
        (HERE / f"{ds}_e.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (HERE / "fixture_predictions.json").write_text(json.dumps(predictions, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
