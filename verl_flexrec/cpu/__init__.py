"""CPU support for verl's trainer (engine + HF-generation rollout)."""
