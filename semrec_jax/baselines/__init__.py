"""The `baselines` stage: popularity and SASRec (item-ID, semantic-ID) on the LM's split and metrics."""
