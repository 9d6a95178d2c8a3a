"""Risk stratification: who is most likely to have an emergency admission soon, and why.

Transparent and versioned like the indicators: the factors, their points, the tier cut-offs
and the segment rules are data (``carehub/domain/data/risk/``, checked at start-up by
:func:`load_model`); the code only knows what each kind of factor means. Pure, no I/O beyond
reading the packaged files once. The pieces:

- :mod:`.model`: the model file and the code lists it names, loaded into a :class:`RiskModel`;
- :mod:`.state`: the per-person :class:`FactorState`, from a timeline (:func:`factor_state`) or
  updated by each enriched timeline event (:func:`advance`);
- :mod:`.factors`: the factor values as of a moment (:func:`compute_factors`);
- :mod:`.score`: score, risk, segment and the explanation (:func:`assess`);
- :mod:`.tiers`: tiers by population percentile (:func:`assign_tiers`);
- :mod:`.evaluation`: AUC and calibration, for the figures in docs/risk.md.
"""

from carehub.domain.risk.evaluation import CalibrationRow, auc, auc_interval, calibration, calibration_line
from carehub.domain.risk.factors import Factors, age_at, compute_factors
from carehub.domain.risk.model import RiskModel, load_model, parse_model
from carehub.domain.risk.score import Assessment, Contribution, assess, score_factors, segment_of
from carehub.domain.risk.state import FactorState, SpellRecord, advance, factor_state
from carehub.domain.risk.tiers import TierCutoffs, assign_tiers, tier_cutoffs, tier_of

__all__ = [
    "Assessment",
    "CalibrationRow",
    "Contribution",
    "FactorState",
    "Factors",
    "RiskModel",
    "SpellRecord",
    "TierCutoffs",
    "advance",
    "age_at",
    "assess",
    "assign_tiers",
    "auc",
    "auc_interval",
    "calibration",
    "calibration_line",
    "compute_factors",
    "factor_state",
    "load_model",
    "parse_model",
    "score_factors",
    "segment_of",
    "tier_cutoffs",
    "tier_of",
]
