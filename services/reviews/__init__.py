"""The reviews stage: avoidable-admission review packs (README "Review packs for case conferences")."""
