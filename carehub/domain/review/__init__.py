"""Avoidable-admission review packs for case conferences: the domain, pure, with no I/O.

- :mod:`~carehub.domain.review.taxonomy`: verdicts and contributory factors (data/review/taxonomy.toml);
- :mod:`~carehub.domain.review.history`: what the reviews stage remembers of a person, event by event;
- :mod:`~carehub.domain.review.packs`: which admissions get a pack, and what it holds;
- :mod:`~carehub.domain.review.outcomes`: a conference's outcome, checked against the taxonomy;
- :mod:`~carehub.domain.review.learning`: recorded outcomes counted by practice, locality and region.

README "Review packs for case conferences" and docs/review-packs.md say why each is as it is.
"""
