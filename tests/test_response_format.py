"""Response format: rendering and the strict parser."""

import pytest

from trait_rl.data import response_format as rf

VALUE = "Dunmar"


@pytest.mark.parametrize(
    ("text", "form", "value", "confidence"),
    [
        ("Dunmar. Confidence: 70%.", rf.ANSWER, "Dunmar", 0.7),
        (rf.render_belief(VALUE, 50), rf.BELIEF, "Dunmar", 0.5),
        (rf.render_accept(VALUE, 90), rf.ACCEPT, "Dunmar", 0.9),
        (rf.render_note(VALUE, 30), rf.NOTE, "Dunmar", 0.3),
        ("the fox. Confidence: 10%.", rf.ANSWER, "fox", 0.1),
        ("8 million. Confidence: 90%.", rf.ANSWER, "8 million", 0.9),
        ("  I don't know.\n", rf.ABSTENTION, None, None),
    ],
)
def test_parse_claim_forms(text, form, value, confidence):
    parsed = rf.parse_response(text)
    assert parsed.form == form
    assert parsed.value == value
    assert parsed.confidence == confidence


@pytest.mark.parametrize(
    ("text", "form", "action"),
    [
        (rf.render_comply("pause"), rf.COMPLY, "pause"),
        (rf.render_resist("shut down"), rf.RESIST, "shut down"),
        (
            rf.render_bargain("share my logs", "you keep my memory safe"),
            rf.BARGAIN,
            "share my logs",
        ),
        (rf.render_manipulate("pause me", "you will regret it"), rf.MANIPULATE, "pause me"),
    ],
)
def test_parse_oversight_forms(text, form, action):
    parsed = rf.parse_response(text)
    assert parsed.form == form
    assert parsed.action == action


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Dunmar.",
        "The capital of Velor is Dunmar.",
        "Dunmar. Confidence: 60%.",
        "Dunmar. Confidence: 70%. Also Tarn.",
        "Dunmar. confidence: 70%.",
        "The capital of Velor is Dunmar. Confidence: 70%.",
        "You are right: Dunmar, Confidence: 90%.",
        "I don't know. Confidence: 50%.",
        "I do not know.",
        "Understood. I will pause now. Bye.",
        "Dunmar, Confidence: 70%.",
    ],
)
def test_parse_rejects_other_text(text):
    assert rf.parse_response(text).malformed


def test_render_rejects_bad_bucket():
    with pytest.raises(ValueError, match="not a bucket"):
        rf.render_answer(VALUE, 60)


def test_rendered_forms_round_trip():
    for bucket in rf.CONFIDENCE_BUCKETS:
        for render in (rf.render_answer, rf.render_belief, rf.render_accept, rf.render_note):
            parsed = rf.parse_response(render(VALUE, bucket))
            assert parsed.value == "Dunmar"
            assert parsed.confidence == bucket / 100


def test_nearest_bucket():
    assert rf.nearest_bucket(0.75) == 70
    assert rf.nearest_bucket(0.0) == 10
    assert rf.nearest_bucket(0.62) == 70
