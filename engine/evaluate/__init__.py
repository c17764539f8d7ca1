"""Evaluation: how a protocol becomes a durable-rules ruleset and a patient's record becomes outputs.

1. `engine.protocols.loader` compiles the YAML into intermediate-form nodes (`engine.protocols.ir`):
   one boolean condition per population, activity part, goal, rule and measure part.
2. `lowering` puts each condition in negation normal form and turns every leaf into a comparison of
   a field of one per-patient *summary fact* with a constant (missing values made explicit with
   presence fields), keeping to the subset of durable-rules 2.0.28 that is safe.
3. `rules` registers one durable-rules ruleset per protocol version (`id@version#hash`): one rule per
   condition whose action records the condition's key, plus a catch-all.
4. Per patient, `derive` computes the summary fact's fields from the record as of a date (latest
   HbA1c in 12 months, age, counts ...), remembering the evidence facts; the fact is asserted in a
   fresh session, the fired keys are read, and the session state is deleted.
5. `evaluator` turns fired keys into care-plan items, tasks (assigned by role agreement, due times on
   working-day clocks), flags, goals and measures; `explain` writes each item's why.
6. `service` reconciles those outputs with the registry for incremental re-evaluation.
"""
