"""The CI gate: a budgets file of model × target × device limits, checked against fresh exports and
profiles (measured where the device is reachable, predicted — and marked so — where it is not).

    budgets (TOML) ──load_budgets──▶ Budgets ──collect──▶ {key: Measured} ──evaluate──▶ GateResults
                                                                                       ├ junit_xml
                                                                                       ├ markdown
                                                                                       └ baseline_json

Besides the budgeted limits, every exported artifact must pass its parity check (an artifact that
does not compute what its model computes fails the gate whatever its speed).

`evaluate` is a pure function of the budgets, the measurements and an optional baseline, so the
rules are tested without exporting anything; `collect` is the only part that runs exports/profiles.

Modules: `budgets` (the file and the baseline), `rules` (evaluate), `reports` (JUnit,
markdown), `collect` (the only part that runs exports and profiles).
"""
