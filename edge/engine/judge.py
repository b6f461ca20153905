"""`humwatch judge`: a new bundle and the running one scored side by side on the home's own clips
that neither was trained on: the recordings and relabelled clips made on the Pi that
edge.core.labels.kept_for_judging holds out of every retrain (one in JUDGING_SHARE, by name).

Each clip is decided whole, as `humwatch batch` does (the median of its windows against each
appliance's threshold). A row per appliance and state (``fridge on``: the clips whose name says the
fridge ran) counts the clips each bundle got right; the summary state's row counts clips whose name
decides it. The new bundle is ``worse`` when it gets fewer right in all (an appliance the other
bundle lacks counts for neither), ``better`` when more, else ``equal``.
"""

from __future__ import annotations

from pathlib import Path

from edge.core.files import sha256_file, walk_files
from edge.core.labels import is_audio, kept_for_judging, parse_sample_name
from edge.engine.detector import Detector


def held_out_clips(samples_dir: Path) -> list[Path]:
    """The home's clips kept for judging, below `samples_dir` (sorted)."""
    files, _ = walk_files(samples_dir)
    clips = []
    for path in files:
        named = parse_sample_name(path) if is_audio(path) else None
        if named is not None and kept_for_judging(named):
            clips.append(path)
    return clips


def score(bundle: Path, clips: list[Path]) -> dict[str, tuple[int, int]]:
    """{"<appliance> on|off": (right, clips), "state": (right, clips)} of one bundle on these clips."""
    detector = Detector.from_bundle(bundle, hop=None)
    decision = detector.decision
    names = decision.appliances.names
    rows: dict[str, list[int]] = {}
    for path in clips:
        labels = parse_sample_name(path).labels
        result = detector.classify_file(path)
        if result.decision is None:
            continue  # no signal: nothing to judge
        medians = result.decision.probabilities  # each appliance's median over the clip
        for name, on in labels.items():
            if name in names:
                row = rows.setdefault(f"{name} {'on' if on else 'off'}", [0, 0])
                row[0] += int((medians[name] >= decision.levels[name].threshold) == on)
                row[1] += 1
        if set(names) <= set(labels):  # the name decides the summary state
            row = rows.setdefault("state", [0, 0])
            row[0] += int(result.status == decision.appliances.status({n: labels[n] for n in names}))
            row[1] += 1
    return {what: (right, count) for what, (right, count) in sorted(rows.items())}


def judge(new: Path, old: Path, clips: list[Path]) -> dict:
    """Both bundles on `clips`: rows ("what", "new", "old" as 'right/clips'), the verdict, a summary."""
    scores = {"new": score(new, clips), "old": score(old, clips)}
    rows, right = [], {"new": 0, "old": 0}
    for what in sorted(set(scores["new"]) | set(scores["old"])):
        row = {"what": what}
        for side in ("new", "old"):
            got = scores[side].get(what)
            row[side] = f"{got[0]}/{got[1]}" if got else "-"
            if got and what in scores["new"] and what in scores["old"]:
                right[side] += got[0]
        rows.append(row)
    verdict = "better" if right["new"] > right["old"] else "worse" if right["new"] < right["old"] else "equal"
    compared = {"better": "better than", "worse": "worse than", "equal": "as good as"}[verdict]
    summary = (f"{compared} the running bundle on {len(clips)} held-out clips of this home: "
               f"{right['new']} right against {right['old']}")
    return {"verdict": verdict, "clips": len(clips), "rows": rows, "summary": summary,
            "against_sha256": sha256_file(old / "bundle.json"), "new": str(new), "old": str(old)}
