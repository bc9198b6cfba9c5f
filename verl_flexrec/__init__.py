"""verl-flexrec: FlexRec (need-conditioned LLM ranking with counterfactual swap rewards and an
uncertainty-aware critic) as a plugin for verl 0.9.

Framework-free math: :mod:`verl_flexrec.ranking` (metrics, swap rewards),
:mod:`verl_flexrec.parsing`, :mod:`verl_flexrec.needs`, :mod:`verl_flexrec.advantage`,
:mod:`verl_flexrec.uncertainty`, :mod:`verl_flexrec.reward`. verl seams:
:mod:`verl_flexrec.integration` (registered by the ``verl.plugins`` entry point).
"""

__version__ = "0.1.0"
