"""What a method can ask of its cell: data and splits, its parents' models and artifacts, teacher targets."""
