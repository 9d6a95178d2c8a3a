"""Case lists: tier cut-offs over the population, and each practice's and team's people in the top tiers."""
