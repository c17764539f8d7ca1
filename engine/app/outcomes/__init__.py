"""Outcome evaluation for the pathway cohorts (issue 19): emergency admissions, A&E attendances,
emergency bed days and 30-day readmissions per 1,000 people per year, by month, for the area, its
localities, MDTs and practices.

    table.py   the input: person-time and events by practice, age band, sex, cohort and month
    protocol_route.py  fills it from the pilot-outcomes protocol's `value:` measures (the one definition
               carepath reports) with the DuckDB batch engine: a population folder, the registry, or a
               generated population (tests/outcomes_reference.py keeps a direct count as the tests' reference)
    rates.py   monthly crude and directly age-sex standardised rates; funnel comparison between units
    spc.py     XmR charts with the Making Data Count special-cause rules
    did.py     pilot against the rest, before and after: difference-in-differences; savings scenario
    report.py  everything above for one cohort and outcome, as plain data (the command and the pages)
    values.py  per-person outcome values from measures with `value:` in the protocol language (o1)

See docs/outcomes.md.
"""
