"""The population stage: each person's risk assessment (score, tier, segment, why), kept current from the timeline."""
