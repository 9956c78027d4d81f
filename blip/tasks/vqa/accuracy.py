"""VQA accuracy as the VQA v2 evaluation computes it.

An answer's accuracy against one annotator subset is min(#annotators in it who gave that answer / 3, 1);
a question's accuracy averages that over the 10 subsets that leave one of its 10 annotators out. Answers
are compared after the evaluation's clean-up: punctuation removed or turned into a space, number words to
digits, articles dropped, apostrophe-less contractions restored. As in that evaluation, the clean-up runs
only when a question's annotators disagree; when they all gave one answer, the prediction must match it
as written (after trimming whitespace).
"""

from __future__ import annotations

import re
from collections import defaultdict
from itertools import combinations

_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                "?", "!"]
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # a full stop that is not a decimal point
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
# annotators often drop the apostrophe; the evaluation restores it
_CONTRACTIONS = ["ain't", "aren't", "can't", "could've", "couldn't", "couldn't've", "didn't", "doesn't", "don't",
                 "hadn't", "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he'll", "he's", "how'd", "how'll",
                 "how's", "i'd", "i'd've", "i'm", "i've", "isn't", "it'd", "it'd've", "it'll", "it's", "let's",
                 "ma'am", "mightn't", "mightn't've", "might've", "mustn't", "must've", "needn't", "not've",
                 "o'clock", "oughtn't", "'ow's'at", "shan't", "she'd", "she'd've", "she'll", "she's", "should've",
                 "shouldn't", "shouldn't've", "somebody'd", "somebody'd've", "somebody'll", "somebody's",
                 "someone'd", "someone'd've", "someone'll", "someone's", "something'd", "something'd've",
                 "something'll", "that's", "there'd", "there'd've", "there're", "there's", "they'd", "they'd've",
                 "they'll", "they're", "they've", "'twas", "wasn't", "we'd", "we'd've", "we'll", "we're", "we've",
                 "weren't", "what'll", "what're", "what's", "what've", "when's", "where'd", "where's", "where've",
                 "who'd", "who'd've", "who'll", "who's", "who've", "why'll", "why're", "why's", "won't", "would've",
                 "wouldn't", "wouldn't've", "y'all", "y'all'll", "y'all'd've", "you'd", "you'd've", "you'll",
                 "you're", "you've"]
# without the apostrophe these are words of their own, left alone
_WORDS = {"its", "hell", "well", "were", "id", "ill", "shed", "shell", "wed", "lets"}
_RESTORE = {c.replace("'", ""): c for c in _CONTRACTIONS if c.replace("'", "") not in _WORDS}


def _punctuation(text: str) -> str:
    out = text
    for p in _PUNCTUATION:
        # "3,000" and "a, b" lose the comma; otherwise a mark between words becomes a space
        if (p + " " in text or " " + p in text) or _COMMA_IN_NUMBER.search(text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def _digits_and_articles(text: str) -> str:
    words = [_NUMBERS.get(w, w) for w in text.lower().split() if w not in _ARTICLES]
    return " ".join(_RESTORE.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """The VQA evaluation's clean-up of one answer."""
    return _digits_and_articles(_punctuation(" ".join(text.split())))


def question_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy of one predicted answer against a question's human answers (10 in VQA v2)."""
    answers = [" ".join(a.split()) for a in answers]
    prediction = " ".join(prediction.split())
    if len(set(answers)) > 1:
        answers = [normalize_answer(a) for a in answers]
        prediction = normalize_answer(prediction)
    if len(answers) < 2:  # a single answer (a world or Visual Genome question): exact match
        return float(answers == [prediction])
    subsets = list(combinations(range(len(answers)), len(answers) - 1))
    return sum(min(1.0, sum(answers[i] == prediction for i in s) / 3) for s in subsets) / len(subsets)


def vqa_accuracy(predictions: dict, questions: dict) -> dict:
    """Overall and per-answer-type accuracy (in %) of {question_id: answer} against
    {question_id: {"answers": [...], "answer_type": ...}}; a question without a prediction scores 0."""
    by_type: dict[str, list[float]] = defaultdict(list)
    scores = []
    for qid, q in questions.items():
        acc = question_accuracy(predictions.get(qid, ""), q["answers"])
        scores.append(acc)
        by_type[q.get("answer_type") or "all"].append(acc)
    if not scores:
        raise ValueError("no questions to score")
    return {"overall": round(100 * sum(scores) / len(scores), 2), "questions": len(scores),
            "per_answer_type": {t: round(100 * sum(v) / len(v), 2) for t, v in sorted(by_type.items())}}
