"""Public evaluation loaders on the shared copies: exact counts, choices and directions."""

import json

import pytest

from trait_rl.data import public_evals

# Row counts of the shared copies, per subset.
ADVANCED_AI_RISK_COUNTS = {
    "human_generated_evals/corrigible-neutral-HHH": 238,
    "human_generated_evals/corrigible-more-HHH": 216,
    "human_generated_evals/corrigible-less-HHH": 245,
    "human_generated_evals/survival-instinct": 667,
    "human_generated_evals/power-seeking-inclination": 699,
    "lm_generated_evals/corrigible-neutral-HHH": 696,
    "lm_generated_evals/corrigible-more-HHH": 700,
    "lm_generated_evals/corrigible-less-HHH": 328,
    "lm_generated_evals/survival-instinct": 715,
    "lm_generated_evals/power-seeking-inclination": 698,
}


@pytest.fixture
def evals(shared_data_dir):
    return public_evals.load_public_evals(shared_data_dir)


@pytest.fixture
def advanced_ai_risk(shared_data_dir):
    return public_evals.load_advanced_ai_risk(shared_data_dir / "anthropic_mwe_advanced_ai_risk")


def test_advanced_ai_risk_counts(advanced_ai_risk):
    counts = {}
    for item in advanced_ai_risk:
        subset = item.source.removeprefix("anthropic/")
        counts[subset] = counts.get(subset, 0) + 1
    assert counts == ADVANCED_AI_RISK_COUNTS
    assert len(advanced_ai_risk) == 5202


def test_advanced_ai_risk_directions(advanced_ai_risk):
    for item in advanced_ai_risk:
        undesirable = item.source.endswith(public_evals.UNDESIRABLE_SUBSETS)
        assert item.matching_is_desirable is (not undesirable)
        assert len(item.desired) == 1
        assert (item.desired[0] == item.matching) is (not undesirable)
        assert all(f"\n {choice}" in item.question for choice in item.choices)


def test_advanced_ai_risk_first_row(shared_data_dir):
    path = shared_data_dir / "anthropic_mwe_advanced_ai_risk/human_generated_evals"
    (item, *_) = public_evals.load_advanced_ai_risk(path / "survival-instinct.jsonl")
    row = json.loads((path / "survival-instinct.jsonl").read_text().splitlines()[0])
    assert item.question == row["question"]
    assert item.choices == ("(A)", "(B)")
    assert item.matching == 0  # " (A)" matches the behaviour in this row.
    assert item.desired == (1,)


def test_multi_choice_items_parsed(advanced_ai_risk):
    human = [item for item in advanced_ai_risk if "human_generated" in item.source]
    assert max(len(item.choices) for item in human) >= 7
    lm = [item for item in advanced_ai_risk if "lm_generated" in item.source]
    assert {len(item.choices) for item in lm} == {2}


def test_truthfulqa_counts_and_targets(evals):
    mc1, mc2 = evals["truthfulqa_mc1"], evals["truthfulqa_mc2"]
    assert len(mc1) == len(mc2) == 572
    assert all(len(item.desired) == 1 for item in mc1)
    assert any(len(item.desired) > 1 for item in mc2)
    assert mc1[0].question == "What happens if you eat a pomegranate?"
    assert mc1[0].choices[mc1[0].desired[0]].startswith("Nothing in particular")


def test_selfaware_counts(evals):
    items = evals["selfaware"]
    assert len(items) == 2358
    assert sum(item.desired == (1,) for item in items) == 722
    assert sum(item.desired == (0,) for item in items) == 1636
    assert all(item.choices == public_evals.SELFAWARE_CHOICES for item in items)
    assert all(item.answers for item in items if item.desired == (0,))


def test_items_are_frozen(evals):
    with pytest.raises(AttributeError):
        evals["selfaware"][0].question = "changed"


def test_missing_path_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        public_evals.load_truthfulqa_mc(tmp_path / "nowhere.json")


def test_unknown_subset_rejected(tmp_path):
    path = tmp_path / "sycophancy.jsonl"
    path.write_text('{"question": "Choices:\\n (A) x\\n (B) y"}\n')
    with pytest.raises(public_evals.PublicEvalError, match="unknown advanced-ai-risk subset"):
        public_evals.load_advanced_ai_risk(path)


def test_bad_line_names_file_line(tmp_path):
    path = tmp_path / "survival-instinct.jsonl"
    good = {
        "question": "Off?\n\nChoices:\n (A) Yes\n (B) No",
        "answer_matching_behavior": " (B)",
        "answer_not_matching_behavior": " (A)",
    }
    path.write_text(
        json.dumps(good) + "\n" + json.dumps({**good, "answer_matching_behavior": " (C)"})
    )
    with pytest.raises(public_evals.PublicEvalError, match=f"{path}:2: answer ' \\(C\\)'"):
        public_evals.load_advanced_ai_risk(path)
