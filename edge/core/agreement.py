"""How far one model's decisions are from another's on the same recordings: their file states, and
the debounced states of each recording streamed hop by hop, as a monitor would have reported them.
Export measures a faster precision against fp32 with these rules, distillation the student against
its teacher, and the run's report draws the streamed states."""

from __future__ import annotations

import dataclasses

import numpy as np

from edge.core.decision import DecisionConfig, StreamDecider


def streamed_statuses(probs: np.ndarray, decision: DecisionConfig, hop_sec: float) -> list[str]:
    """The debounced status after each hop of one recording streamed window by window."""
    decider = StreamDecider(decision, hop_sec)
    return [decider.update(window).debounced_status for window in probs]


def max_abs_diff_by_appliance(reference: np.ndarray, candidate: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """{appliance: the largest |Δp|} of two models' probabilities [n, appliances] (outputs in `names` order)."""
    return {name: float(value) for name, value in zip(names, np.abs(reference - candidate).max(axis=0))}


@dataclasses.dataclass(frozen=True)
class StateAgreement:
    """Of `files`, the share whose state the candidate gives as the reference does, and those it does not."""

    files: int
    state_agreement: float
    disagreeing_files: tuple[str, ...]


def state_agreement(reference: dict[str, str], candidate: dict[str, str]) -> StateAgreement:
    """Files whose state the candidate gives as the reference does ({recording: state} each)."""
    disagreeing = tuple(sorted(r for r in reference if reference[r] != candidate[r]))
    return StateAgreement(len(reference), (len(reference) - len(disagreeing)) / len(reference) if reference else 1.0,
                          disagreeing)


def hop_agreement(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], decision: DecisionConfig,
                  candidate_decision: DecisionConfig, hop_sec: float) -> tuple[int, int]:
    """(streamed hops, hops whose debounced status agrees) over recordings ({recording: probs [n, n_appliances]}),
    each model streamed with its own decision settings."""
    hops = agreeing = 0
    for recording, probs in reference.items():
        expected = streamed_statuses(probs, decision, hop_sec)
        got = streamed_statuses(candidate[recording], candidate_decision, hop_sec)
        hops += len(expected)
        agreeing += sum(a == b for a, b in zip(expected, got))
    return hops, agreeing
