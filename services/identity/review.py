"""The identity stage's side of the review desk: what a review item shows, and a decision's effect.

A review item carries what a reviewer needs to settle it at the sources: both records' organisations
and local ids, and field by field how the record compared with the candidate (the levels of
linkage/features.py, their weights, the score). No value is shown: the stage holds keyed encodings only.

A decision (``ReviewDecision`` on the linkage log) is applied once per item: the first one holds, and
a later one is refused and kept on the item beside it. The persons and the record it concerns come
from the item the stage raised, never from the sender.
"""

from __future__ import annotations

from carehub.v1 import identity_pb2 as idn
from carehub.v1 import identity_review_pb2 as rvw

from .linkage import FIELDS, LEVELS, LinkageModel
from .linkage.features import MISSING, Levels


def field_comparisons(model: LinkageModel, levels: Levels) -> list[idn.FieldComparison]:
    """Each field's level, whether it agrees, agrees in part, disagrees or is missing, and its weight.

    The strongest level agrees; a weaker one that still adds to the score agrees in part (a typo, the
    postcode sector); one that takes from it disagrees. A field missing on either side adds nothing.
    """
    out = []
    for i, name in enumerate(FIELDS):
        level = levels[i]
        if level == MISSING:
            out.append(idn.FieldComparison(field=name, level="missing", agreement=idn.FIELD_AGREEMENT_MISSING))
            continue
        weight = model.weights[i][level]
        agreement = (idn.FIELD_AGREEMENT_AGREE if level == 0 else
                     idn.FIELD_AGREEMENT_PARTIAL if weight > 0 else idn.FIELD_AGREEMENT_DISAGREE)
        out.append(idn.FieldComparison(field=name, level=LEVELS[name][level], agreement=agreement,
                                       weight=round(weight, 3)))
    return out


def refuse(item: idn.ReviewItem | None, decision: rvw.ReviewDecision) -> idn.ReviewItem:
    """The item with ``decision`` refused: decided before, or (``item`` None) never raised here."""
    out = idn.ReviewItem(review_id=decision.review_id)
    if item is not None:
        out.CopyFrom(item)
        decision.result = rvw.REVIEW_RESULT_ALREADY_DECIDED
    else:
        decision.result = rvw.REVIEW_RESULT_UNKNOWN_ITEM
    out.refused.append(decision)
    return out


def with_item(decision: rvw.ReviewDecision, item: idn.ReviewItem) -> None:
    """Fill in the persons and the record a decision concerns, from the item as raised."""
    decision.person_id, decision.candidate_person_id = item.person_id, item.candidate_person_id
    decision.source_org, decision.local_id = item.source_org, item.local_id
