"""Language-model track: chat models, prompt templates, rankings, SFT/DPO, knowledge QA."""
