"""FHIR R4: import Bundles into `PatientRecord`s, and export a record back as a FHIR Bundle.

Modules: `bundle` reads a Bundle (`import_bundle`: parse, the resourceType -> reader table, facts);
one reader per resource type (`patient`, `observation`, `condition`, `medication`, `procedure`,
`encounter`, `service_request`, `device`, `coverage`, `allergy`); `common` holds what they share
(extension URLs, `BundleError`, `ImportResult`, JSON pointers, the entry index, coding and time
helpers, the draft fact); `export` writes a record as a Bundle (`export_patient_bundle`).

Parsing uses the **R4B** models of fhir.resources: 8.x validates against R5 by default and rejects
R4 data (Encounter.class changed shape), see shared/design.md.

Every entry of a bundle ends up in exactly one bucket of `ImportResult`, so nothing is lost
silently:

- ``imported``    Patient and clinical resources that became a patient / facts,
- ``supporting``  Medication / Device / Organization used only through a reference (their code
                  or ODS code is copied onto the referring fact or patient),
- ``unsupported`` resource types carepath does not import (counted by type),
- ``skipped``     entries of a supported type that carry nothing usable (no code, no date, no
                  patient, an unknown modifierExtension ...), each with a human-readable reason.

Malformed input (not a Bundle, an entry without a resource, a resource failing FHIR R4 validation,
a value our own model rejects) raises `BundleError` with a JSON pointer into the bundle.

Fact ids are the resource's relative reference, ``Condition/<id>``; observation components get
``Observation/<id>#<component code>``. Reference attrs (``encounter``, ``diagnoses``) hold the
fact ids of the referenced resources so they join directly.

carepath extensions and identifiers (all optional; ``https://carepath.example/fhir/...``):

=================================================  ===========  ======================================
``StructureDefinition/locality``  on Patient       valueString  patient's locality
``StructureDefinition/mdt``  on Patient            valueString  multidisciplinary team
``StructureDefinition/practice``  on Patient       valueCode    GP practice ODS code (when there is no
                                                                generalPractitioner with an ODS code)
``StructureDefinition/registered-on``  on Patient  valueDate    date registered with the practice
``StructureDefinition/care-setting``  any          valueCode    gp | acute | community |
                                                                mental-health | social-care | other;
                                                                overrides the derived care setting
``StructureDefinition/exception-type``  any        valueCode    declined | unsuitable |
                                                                invited-no-response: the fact becomes
                                                                kind=exception (QOF exception code)
``StructureDefinition/fact-kind``  any             valueCode    explicit fact kind (written by export
                                                                for kind=other facts)
``StructureDefinition/fact-extra``  any            valueString  JSON object with the fact's attrs (and
                                                                status / value / unit / value_codes
                                                                where the resource has no native place
                                                                for them); overrides what is read from
                                                                native elements. Written by export so
                                                                our own data round-trips losslessly
``Id/fact-id``  identifier system, any             value        the fact id to use instead of Type/id
``Id/source/<system>``  identifier on Patient      value        Patient.source_ids[<system>]
``source/<system>`` as ``meta.source``, any        (uri)        the fact's source system, overriding
                                                                the `source_system` argument (export
                                                                writes it: a registry export mixes
                                                                sources, re-import must keep them)
=================================================  ===========  ======================================

Care setting: our extension wins; an Encounter's class maps IMP/ACUTE/NONAC/EMER/SS/OBSENC/PRENC
-> acute, HH/FLD -> community, anything else (AMB, VR, ...) -> gp; other resources inherit the
care setting of the Encounter they reference (a Condition also that of an Encounter listing it as
a diagnosis) when it is in the bundle, else gp.

Coverage is imported as kind=other (codes = Coverage.type, attrs["payer"] = payor names or
references, start/end = period) so payer stratification (eCQM supplemental data) stays possible;
a Coverage without type or period is skipped with a reason.
"""
