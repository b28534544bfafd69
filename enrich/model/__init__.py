"""The model side: references and presets, engines, prompts, fine-tuning and export."""
