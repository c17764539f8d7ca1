"""Protocol test cases: the loader and checker live in engine/app/cases.py (the `carepath test`
command uses them too); this module keeps the names the protocol tests import."""
from engine.app.cases import (ASSIGN_FIELDS, MEASURE_FIELDS, MEASURE_SHORTHAND, TASK_FIELDS, Case, CaseFile, CaseFileError,  # noqa: F401
                                    Outcome, case_files, check_case, load_cases, run_case, run_file)
