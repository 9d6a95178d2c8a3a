"""Timeline: each person's spells, consent and clocks, and every linked event enriched with them."""
