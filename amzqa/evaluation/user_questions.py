"""A user's own evaluation questions: ``--questions FILE.jsonl``, one JSON object a line.

Fields: ``question`` (required text), ``uid`` (optional: the product asked about, or ``null`` when the catalog does
not answer the question), ``answer`` (optional reference answer). Every line is checked and the first bad one is
reported with its line number and field; uids are checked against the catalog before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from amzqa.errors import ConfigError

FIELDS = ("question", "uid", "answer")
NO_UID = object()  # the line has no "uid" key: the product asked about is not known (no retrieval measure)


@dataclass(frozen=True, slots=True)
class UserQuestion:
    question: str
    uid: str | None | object = NO_UID  # None: the catalog does not answer; NO_UID: not stated
    answer: str | None = None
    line: int = 0

    @property
    def should_abstain(self) -> bool:
        return self.uid is None

    @property
    def product_uid(self) -> str | None:
        return self.uid if isinstance(self.uid, str) else None


def _fail(path: Path, line: int, message: str) -> ConfigError:
    return ConfigError(f"{path} line {line}: {message}")


def parse_line(path: Path, number: int, text: str) -> UserQuestion:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _fail(path, number, f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _fail(path, number, f"expected a JSON object with {', '.join(FIELDS)}, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise _fail(path, number, f"unknown field(s) {unknown}; allowed: {', '.join(FIELDS)}")
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _fail(path, number, "field 'question' must be a non-empty string")
    uid = obj.get("uid", NO_UID)
    if uid is not NO_UID and uid is not None and (not isinstance(uid, str) or not uid.strip()):
        raise _fail(path, number, "field 'uid' must be a product uid (string) or null (the catalog does not answer)")
    answer = obj.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise _fail(path, number, "field 'answer' must be a string or null")
    return UserQuestion(" ".join(question.split()), uid.strip() if isinstance(uid, str) else uid,
                        answer.strip() if answer else None, number)


def load_user_questions(path: str | Path, store=None) -> list[UserQuestion]:
    """The questions of ``path``, validated; with ``store``, every uid must name a product of the catalog."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"questions file {path} does not exist")
    out = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if text.strip():
                out.append(parse_line(path, number, text))
    if not out:
        raise ConfigError(f"{path}: no questions (one JSON object per line: {{\"question\": ..., \"uid\": ...}})")
    if store is not None:
        for q in out:
            if q.product_uid is not None and store.row_of(q.product_uid) is None:
                raise _fail(path, q.line, f"field 'uid': {q.product_uid!r} is not a product of this catalog")
    return out
