"""Fine-tuning recipes of the paper's transfer table, one config per data set (see recipe.py)."""
