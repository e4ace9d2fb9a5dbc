"""Build-time fine-tuning: RAFT-style SFT data, QLoRA training, adapter merge/export."""
