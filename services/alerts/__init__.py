"""The alert stage: rules over each person's timeline events, alerts to the partners concerned."""
