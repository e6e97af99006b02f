"""The site's one noise rule: when a ratio of two timings counts as faster or slower, and when it is a tie.

A ratio counts only when both hold:

1. the two providers' timing rounds do not overlap (every round median of one lies below every
   round median of the other), and
2. the ratio lies outside the run-to-run band: the largest change of any median between the
   production run and a repeat of a quarter of its cases on the same GPU, minutes later
   (``scripts/benchmark.py --suite noise``).

Anything else is a tie. Every page that calls a result faster, slower or a tie goes through
``verdict``; the "How we measure" section of the home page states the rule and the band.
Standard library only, besides the data format in ``perfdata``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from perfdata import schema

from . import query

CALLS = ("faster", "slower", "tie")


@dataclass(frozen=True)
class Band:
    """The run-to-run band of one GPU's production run: a ratio r is a tie when
    1 / (1 + width) <= r <= 1 + width."""

    width: float  # the largest relative change of a median between the run and its repeat
    typical: float  # the median change, for the prose
    pairs: int  # (case, provider) timings that ran in both
    worst: str  # the timing that moved most: "provider, case"
    gpu: str
    commit: str

    def __post_init__(self):
        if not (isinstance(self.width, (int, float)) and math.isfinite(self.width) and self.width >= 0):
            raise ValueError(f"a band's width must be a finite non-negative number, got {self.width!r}")

    def holds(self, ratio: float) -> bool:
        """Whether ``ratio`` lies inside the band (then it is a tie, whatever the rounds say)."""
        return abs(math.log(ratio)) <= math.log1p(self.width)


@dataclass(frozen=True)
class Verdict:
    """Ours against a peer: ``ratio`` is the peer's time over ours (above 1: ours is faster)."""

    ratio: float
    call: str  # one of CALLS
    rounds_overlap: bool
    inside_band: bool

    def phrase(self) -> str:
        """'1.12× faster', '0.91× (slower)' or '1.02×, a tie'."""
        if self.call == "tie":
            return f"{self.ratio:.2f}×, a tie"
        return f"{self.ratio:.2f}× ({self.call})"


def _case_key(record: dict) -> tuple[str, str]:
    """(case without its suite, provider): how a repeat's record finds the run's."""
    return record["case"].split("/", 1)[1], record["provider"]


def band(run: dict, repeat: dict) -> Band:
    """The band from a production document and the noise repeat timed after it on the same card
    at the same commit; ValueError if they are not one GPU and one commit, or share no timing."""
    for key in ("gpu", "gpu_uuid", "git_commit"):
        mine, theirs = run["provenance"].get(key), repeat["provenance"].get(key)
        if mine != theirs:
            raise ValueError(f"the noise repeat is not of this run: {key} {theirs!r} against the run's {mine!r}")
    first = {_case_key(r): r for r in run["records"] if r["status"] == "ok"}
    changes = []
    for r in repeat["records"]:
        before = first.get(_case_key(r))
        if r["status"] == "ok" and before is not None:
            changes.append((abs(math.log(r["p50"] / before["p50"])), f"{r['provider']}, {_case_key(r)[0]}"))
    if not changes:
        raise ValueError("the noise repeat shares no ok timing with the run")
    changes.sort()
    worst, where = changes[-1]
    typical = changes[len(changes) // 2][0]
    p = run["provenance"]
    return Band(width=math.expm1(worst), typical=math.expm1(typical), pairs=len(changes), worst=where,
                gpu=p["gpu"], commit=p["git_commit"])


def load_band(data_dir: Path | None = None) -> Band:
    """The band of the production run that has a noise repeat in ``data_dir`` (docs/data by default)."""
    repeats = query.load("noise", data_dir)
    runs = query.load("production", data_dir)
    for rep in repeats:
        for run in runs:
            if run["provenance"].get("gpu_uuid") == rep["provenance"].get("gpu_uuid") and \
                    run["provenance"]["git_commit"] == rep["provenance"]["git_commit"]:
                return band(run, rep)
    raise schema.BenchDataError("no noise.*.json repeats a production run of the same card and commit: run "
                                "scripts/benchmark.py --suite noise right after --suite production")


def rounds_overlap(a: dict, b: dict) -> bool:
    """Whether two ok records' timing rounds overlap (one round median of each on both sides)."""
    ra, rb = a.get("round_p50") or [a["p50"]], b.get("round_p50") or [b["p50"]]
    return not (max(ra) < min(rb) or max(rb) < min(ra))


def verdict(ours: dict, peer: dict, band: Band) -> Verdict:
    """Ours against ``peer`` by the rule above; both must be ok records of one case."""
    for r in (ours, peer):
        if r.get("status") != "ok":
            raise ValueError(f"{r.get('provider')} in {r.get('case')} did not run cleanly ({r.get('status')})")
    ratio = peer["p50"] / ours["p50"]
    overlap, inside = rounds_overlap(ours, peer), band.holds(ratio)
    call = "tie" if overlap or inside else ("faster" if ratio > 1 else "slower")
    return Verdict(ratio=ratio, call=call, rounds_overlap=overlap, inside_band=inside)


def step(after: dict, before: dict, band: Band) -> Verdict:
    """One change measured as two records (a step of an ablation, a switch): is ``after`` faster than
    ``before``? The same rule, with ``before`` in the peer's place."""
    return verdict(after, before, band)


def tally(verdicts) -> dict[str, int]:
    """{'faster': n, 'slower': n, 'tie': n} over ``verdicts``."""
    out = dict.fromkeys(CALLS, 0)
    for v in verdicts:
        out[v.call] += 1
    return out


def rule_sentence(b: Band) -> str:
    """The rule in one sentence, with this run's band, for a page to quote."""
    return (f"a ratio counts as faster or slower only when the two providers' timing rounds do not overlap and it "
            f"lies outside the run-to-run band of ±{b.width:.1%} (the largest change of any median when "
            f"{b.pairs} timings of the production run were repeated on the same {schema.slug(b.gpu).upper()}); "
            "anything else is a tie")
