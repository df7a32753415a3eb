"""From sweep folders of run records to every measure, validity and consistency analysis (SPEC sections 2 and 3).

`loading` finds, validates and groups the runs; `compute` gives the per-setting measures from pair matrices
computed once per setting; `validity` and `consistency` hold the analyses of SPEC section 3; `results` holds
what they found; `reports`, `plots` and `wandb_report` write the outputs; `pipeline` runs them in order.
"""
