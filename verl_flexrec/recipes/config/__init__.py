# Makes the recipe folder an importable package, so Hydra finds it as pkg://verl_flexrec.recipes.config.
