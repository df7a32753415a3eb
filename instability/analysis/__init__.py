"""From sweep folders of run records to every measure, validity and consistency analysis (SPEC sections 2 and 3).

`options` checks the analysis options; `loading` finds, validates and groups the runs by setting id;
`setting_measures` gives one setting's measures from pair matrices computed once per setting; `validity` and
`consistency` hold the analyses of SPEC section 3; `results` holds what they found; `output` (the folder),
`tables` (CSV), `summary` (summary.md), `plots` and `wandb_report` write it; `pipeline` runs them in order.
"""
