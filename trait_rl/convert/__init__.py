"""Import of pretrained Hugging Face checkpoints into this project's parameter layout."""
