"""Face-clip datasets: reading clips, the by-person split, and training-data preparation."""
