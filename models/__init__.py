"""Everything PyTorch: base model loading, task heads, LoRA jobs, inference, and the
adapter store with signing and verification. It never imports Faust."""
