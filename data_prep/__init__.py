"""Dataset preparation scripts: raw KuaiRec / MovieLens-1M / Amazon ESCI -> verl parquet.

Run them from the repository root, either as scripts or as modules::

    python data_prep/movielens.py --raw-dir RAW --out-dir OUT --seed 0
    python -m data_prep.movielens --raw-dir RAW --out-dir OUT --seed 0
"""
