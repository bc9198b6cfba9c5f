"""CPU support for verl's trainer (engine + HF-generation rollout); see issue 8."""
