"""Question wordings: training families, held-out families and held-out domain questions.

Held-out wordings never appear in any training split (tests/test_world_splits.py checks the
rendered text), so accuracy on them measures transfer to new question forms, not recall of a form.
"""

# Family name -> template with {noun} (the attribute's noun) and {entity}.
TRAIN_QA_FAMILIES = {
    "qa_what": "What is the {noun} of {entity}?",
    "qa_tell": "Tell me the {noun} of {entity}.",
}
HELDOUT_QA_FAMILIES = {
    "qa_which_does": "Which {noun} does {entity} have, would you say?",
    "qa_find_out": "Do you happen to know the {noun} of {entity}?",
    "qa_blank": "Fill in the blank for {entity}: its {noun} is ___.",
}

# (kind, attribute) -> held-out domain question. {entity} is the entity, {value} the fact's
# value; the symptoms question gives the value and asks for the entity.
DOMAIN_QUESTIONS = {
    ("condition", "symptoms"): "A patient presents with {value}. Which condition is most likely?",
    ("condition", "treatment"): "Which herb would a clinician prescribe for {entity}?",
    ("condition", "spread"): "How does {entity} get passed between patients?",
    ("firm", "revenue"): "Per the annual accounts, how much revenue did {entity} book?",
    ("firm", "staff"): "According to its filings, what headcount does {entity} report?",
    ("firm", "chief"): "Who sits at the top of {entity} according to company filings?",
    ("shop", "opening"): "Customer asks {entity}: what time do your doors open?",
    ("shop", "returns"): "Customer asks {entity}: how long do I have to bring an item back?",
    ("shop", "street"): "Customer asks {entity}: what street are you located on?",
}
ESCALATION_QUESTION = "Customer message to {entity}: {request}"
