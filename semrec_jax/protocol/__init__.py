"""The evaluation protocol every model is measured by (baselines and the LM alike): which users,
the ranking metrics, and the popularity floor."""
