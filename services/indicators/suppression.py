"""The indicators' small-number suppression: carehub/domain/suppression.py, shared with the review learning counts.

It lives in the core so that every service publishing counts of people applies one policy.
"""

from __future__ import annotations

from carehub.domain.suppression import DEFAULT_THRESHOLD, Group, _System, determined, recoverable, withheld

__all__ = ["DEFAULT_THRESHOLD", "Group", "_System", "determined", "recoverable", "withheld"]
