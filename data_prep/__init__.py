"""Data-preparation command lines (raw KuaiRec / MovieLens / Amazon ESCI -> verl parquet).

Each script is a thin command line over :mod:`verl_flexrec.data`, which holds the logic and
works from a plain install as ``python -m verl_flexrec.data DATASET``::

    python data_prep/movielens.py --raw-dir RAW --out-dir OUT --seed 0
    python -m verl_flexrec.data movielens --raw-dir RAW --out-dir OUT --seed 0
"""
