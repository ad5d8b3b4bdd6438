"""The evaluation protocol every model is measured by (baselines and the LM alike): which users,
the ranking metrics, the popularity floor, and each user's kept list for paired comparisons."""
