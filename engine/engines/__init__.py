"""The engines: each decides which of a protocol's conditions hold for a patient, from the same IR.

One interface, `fired(record, protocol, ctx) -> (keys, deriver)`: the keys of the lowered conditions
(`engine.ir.lowering`) that held, and the `derive.Deriver` the outputs use to explain them.

    reference  plain Python over the derived summary fact (the reference the others are tested against)
    durable    durable-rules decides the boolean match over the same summary fact (durable/)
    duckdb     the batch engine: the whole condition compiled to SQL over columnar tables (duckdb/)

`derive` is the step the reference and durable engines share: it computes the summary fact's fields
(latest HbA1c in 12 months, age, counts, ...) from one patient's record. The engines never import
each other (checked by the import contracts in .importlinter).
"""
