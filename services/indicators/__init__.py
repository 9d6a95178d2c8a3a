"""Indicators: real-time rates, proportions, funnel-plot limits and small-number suppression for published figures."""
