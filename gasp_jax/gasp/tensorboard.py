"""GASP's TensorBoard custom-scalars layout: the story of a run on the first screen.

The CUSTOM SCALARS tab shows, in this order: lemma/lift acceptance, valid rate, teacher reward, the
student's pass rate per presented kind and goalposts solved (per evaluation and the running union),
then per-goalpost progress and health. `GaspSource.tensorboard_layout()` returns it; the trainer writes
it once per run (`MetricWriter.layout`). Tags are regular expressions matched against scalar names.
"""

from __future__ import annotations

from collections.abc import Sequence

STAGES = ("lemma", "lift")


def custom_scalars_layout(axes: Sequence[str] = ("io", "algorithm"),
                          student_kinds: Sequence[str] = ("induction", "deduction", "abduction")) -> dict:
    """`{category: {chart: ["Multiline", [tag regexes]]}}`, tensorboardX `add_custom_scalars`'s layout."""
    story = {
        "lemma / lift acceptance": ["Multiline", [f"^gasp/{s}/accept_rate$" for s in STAGES]],
        "lemma / lift valid rate": ["Multiline", [f"^gasp/{s}/valid_rate$" for s in STAGES]],
        "teacher reward (mean)": ["Multiline", [f"^gasp/{s}/reward_mean$" for s in STAGES]],
        "student pass rate per kind": ["Multiline", [f"^{k}/solve/pass_rate$" for k in student_kinds]],
        "goalposts solved (this evaluation, union so far)": [
            "Multiline", ["^gasp/goalposts/solved_count$", "^gasp/goalposts/solved_union$"]],
    }
    detail = {
        "acceptance per axis": ["Multiline", [f"^gasp/{s}/accept_rate/{a}$" for s in STAGES for a in axes]],
        "accepted lemmas per goalpost": ["Multiline", ["^gasp/goalpost/.*/accepted_lemmas$"]],
        "accepted lifts per goalpost": ["Multiline", ["^gasp/goalpost/.*/accepted_lifts$"]],
        "accepted questions (buffer)": ["Multiline", ["^gasp/buffer/size$"]],
        "duplicates and goalpost copies": [
            "Multiline", ["^gasp/dedup/duplicates_total$", "^gasp/dedup/goalpost_copies_total$"]],
        "goalpost pass@k": ["Multiline", ["^gasp/goalposts/pass_at_.*$"]],
    }
    return {"GASP: the curriculum": story, "GASP: details": detail}
