"""One submission's result: what a grader process returns, the gradebook records and feedback shows.

A :class:`SubmissionResult` crosses from each grader process to the batch as JSON
(:meth:`SubmissionResult.to_json`, read back strictly by :meth:`SubmissionResult.from_json`). It holds
test names, points, statuses and the messages the runner wrote, which for hidden tests say only
that a hidden test failed: never a hidden test's code or an expected value. ``lab_problems`` and
``output`` are for the instructor only: the gradebook does not record them and feedback never shows them;
the batch writes a crashed program's ``output`` to a file that its summary lists.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum


class TestStatus(StrEnum):
    """What happened to one graded part: a test cell or a written answer."""

    __test__ = False  # not a pytest test class

    PASSED = "passed"
    FAILED = "failed"
    NOT_ATTEMPTED = "not attempted"  # the exercise still raises NotImplementedError, or no answer was written
    ERROR = "error"  # the student's code raised, or the grader failed on this submission
    TIMED_OUT = "timed out"
    DIED = "died"  # the student's program exited or was killed while a test needed it
    INVALID = "invalid"  # the submitted file is not a usable notebook for this lab
    NEEDS_REVIEW = "needs review"  # a written answer: 0 points until an instructor marks it
    REVIEWED = "reviewed"  # a written answer an instructor marked (as the gradebook reads it back)


class Status(StrEnum):
    """What happened to the submission as a whole."""

    GRADED = "graded"
    INVALID = "invalid"  # not a usable notebook for this lab: every part is "invalid"
    ERROR = "error"  # the grader failed on it: every part is "error", the message says why


class MalformedResult(ValueError):
    """A result's JSON is not a :class:`SubmissionResult`; the message names the field and what is wrong."""


@dataclass
class TestResult:
    """One graded part of a submission."""

    __test__ = False  # not a pytest test class

    grade_id: str
    points: float
    max_points: float
    status: TestStatus
    message: str  # for the student: it reveals nothing of the hidden tests
    seconds: float

    def __post_init__(self) -> None:
        self.status = TestStatus(self.status)  # a status outside the closed set is a ValueError here


@dataclass
class SubmissionResult:
    """One submission's outcome; ``tests`` holds the automatic tests and the written answers."""

    status: Status
    message: str  # what happened to the program as a whole ("" when nothing did)
    tests: list[TestResult]
    notes: list[str] = field(default_factory=list)  # for the student: what was restored, ignored or cut
    answers: dict[str, str] = field(default_factory=dict)  # grade_id of each written answer -> the student's text
    lab_problems: list[str] = field(default_factory=list)  # cells of the lab that failed: for the instructor only
    output: str = ""  # what the program printed (capped per run): for the instructor only

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def score(self) -> float:
        return sum(t.points for t in self.tests)

    @property
    def max_score(self) -> float:
        return sum(t.max_points for t in self.tests)

    @property
    def awaiting_points(self) -> float:
        """The points of the written answers no instructor has marked yet."""
        return sum(t.max_points for t in self.tests if t.status is TestStatus.NEEDS_REVIEW)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SubmissionResult:
        """The result :meth:`to_json` wrote; anything else raises :class:`MalformedResult` saying what is wrong."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise MalformedResult(f"a submission result must be JSON ({err})") from None
        return _decode(cls, data, "result")


@dataclass
class RecordedResult:
    """A submission as the gradebook holds it, for feedback and the review page.

    ``result`` has the instructor's reviews applied: a marked written answer has status
    ``reviewed`` and the review's points. The gradebook keeps neither ``lab_problems`` nor ``output``.
    """

    student: str
    lab: str
    result: SubmissionResult
    comments: dict[str, str] = field(default_factory=dict)  # grade_id -> the reviewer's comment on that answer


def _decode(kind, value, where: str):
    """``value`` (parsed JSON) as ``kind``: a dataclass, list, dict with string keys, Enum, str or float."""
    def wrong(expected: str) -> MalformedResult:
        return MalformedResult(f"{where} must be {expected}, not {type(value).__name__} {value!r:.80}")

    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise wrong("a JSON object")
        hints, names = typing.get_type_hints(kind), [f.name for f in dataclasses.fields(kind)]
        missing, unknown = sorted(set(names) - value.keys()), sorted(value.keys() - set(names))
        if missing:
            raise MalformedResult(f"{where} has no field {', '.join(missing)}")
        if unknown:
            raise MalformedResult(f"{where} has unknown field {', '.join(unknown)}")
        return kind(**{name: _decode(hints[name], value[name], f"{where}.{name}") for name in names})
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise wrong("a JSON list")
        (item,) = typing.get_args(kind)
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if typing.get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise wrong("a JSON object")
        _, item = typing.get_args(kind)
        return {k: _decode(item, v, f"{where}[{k!r}]") for k, v in value.items()}
    if issubclass(kind, Enum):
        if not isinstance(value, str) or value not in {m.value for m in kind}:
            raise MalformedResult(f"{where} is {value!r}, not one of: {', '.join(repr(m.value) for m in kind)}")
        return kind(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if not isinstance(value, kind):
        raise wrong(f"a {kind.__name__}")
    return value
