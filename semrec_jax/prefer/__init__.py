"""The preference stage: rule-rewarded reinforcement learning (GRPO) after `lm`."""
