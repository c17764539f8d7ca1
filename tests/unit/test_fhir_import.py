from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from engine.records.fhir.bundle import import_bundle
from engine.records.fhir.common import BundleError
from engine.records.fhir.export import export_patient_bundle
from engine.records.fhir.patient import pseudo_nhs_number
from engine.records.model import CareSetting, Coding, ExceptionType, Fact, FactKind, Patient, PatientRecord, Sex
from engine.records.nhs_number import check_digit, is_valid_nhs_number
from fhirbuild import ODS, bundle, cc, ext, patient, qty, ref, resource

ECQM = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "ecqm"
ECQM_BUNDLES = sorted(ECQM.glob("CMS122/cases/*/bundle.json")) + sorted(ECQM.glob("CMS165/cases/*/bundle.json"))
NHS_OK = "9434765919"


def facts_by_id(result, i=0) -> dict[str, Fact]:
    return {f.id: f for f in result.records[i].facts}


def one_fact(*resources, **kw) -> Fact:
    result = import_bundle(bundle(patient(), *resources), **kw)
    assert not result.skipped, result.skipped
    (fact,) = result.records[0].facts
    return fact


# ---------------------------------------------------------------------------------------------
# The eCQM conformance bundles (US QI-Core data, R4)


def test_ecqm_bundles_are_all_there():
    assert len(ECQM_BUNDLES) == 124


@pytest.fixture(scope="module")
def ecqm_results():
    out = {}
    for path in ECQM_BUNDLES:
        data = json.loads(path.read_text())
        out[path.parent.parent.parent.name + "/" + path.parent.name] = (data, import_bundle(data))
    return out


def test_every_ecqm_bundle_imports_as_one_patient_and_loses_no_entry(ecqm_results):
    assert len(ecqm_results) == 124
    for name, (data, result) in ecqm_results.items():
        expected = json.loads((ECQM / name.replace("/", "/cases/") / "expected.json").read_text())
        (record,) = result.records
        assert record.patient.source_ids == {"fhir": expected["patient_id"]}, name
        assert record.patient.nhs_number.startswith("999") and is_valid_nhs_number(record.patient.nhs_number)
        # Every entry is accounted for in exactly one bucket.
        accounted = sum(result.imported.values()) + sum(result.supporting.values()) + sum(result.unsupported.values()) + len(result.skipped)
        assert accounted == len(data["entry"]), name
        types = {e["resource"]["resourceType"] for e in data["entry"]}
        assert set(result.unsupported) <= types
        for f in record.facts:
            assert f.source_system == "fhir" and f.codes


def test_ecqm_unsupported_skipped_and_supporting_are_reported(ecqm_results):
    skipped = [s for _, r in ecqm_results.values() for s in r.skipped]
    # Two SDE Coverage resources carry no period: reported, not dropped silently.
    assert len(skipped) == 2 and all("Coverage/" in s and "no date" in s for s in skipped)
    supporting = {}
    for _, r in ecqm_results.values():
        for k, v in r.supporting.items():
            supporting[k] = supporting.get(k, 0) + v
        assert r.unsupported == {}  # every resource type in these bundles is imported or used
    assert supporting == {"Medication": 1}
    _, ref_case = ecqm_results["CMS165/DENEXPass-DementiaMedicationRequestAsReference"]
    (med,) = [f for f in ref_case.records[0].facts if f.kind == FactKind.medication]
    assert med.codes[0].code == "312836"  # code taken from the referenced Medication


def test_ecqm_blood_pressure_components_become_their_own_facts(ecqm_results):
    data, result = ecqm_results["CMS165/NUMERFail-SBP140DBP89DuringMP"]
    facts = facts_by_id(result)
    obs = next(e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Observation")
    panel = facts[f"Observation/{obs['id']}"]
    sbp, dbp = facts[f"Observation/{obs['id']}#8480-6"], facts[f"Observation/{obs['id']}#8462-4"]
    assert (sbp.value, sbp.unit, dbp.value, dbp.unit) == (140.0, "mm[Hg]", 89.0, "mm[Hg]")  # UCUM code, not "mmHg"
    assert (sbp.codes[0].system, sbp.codes[0].code) == ("http://loinc.org", "8480-6") and sbp.start == panel.start == dt.datetime(2026, 1, 1)
    assert sbp.attrs["category"] == ["vital-signs"] and sbp.attrs["component_of"] == panel.id
    assert panel.value is None and panel.codes[0].code == "85354-9"
    n_split = sum(1 for _, r in ecqm_results.values() for f in r.records[0].facts if "#8480-6" in f.id)
    assert n_split == 5


def test_ecqm_care_settings_follow_encounter_class(ecqm_results):
    _, result = ecqm_results["CMS165/NUMERFail-SBP139DBP89TakenDuringEMER"]
    enc = [f for f in result.records[0].facts if f.kind == FactKind.encounter and f.attrs["class"] == "EMER"]
    assert enc and enc[0].care_setting == CareSetting.acute
    bp = [f for f in result.records[0].facts if f.id.endswith("#8480-6")][0]
    assert bp.attrs["encounter"] == enc[0].id and bp.care_setting == CareSetting.acute
    amb = [f for _, r in ecqm_results.values() for f in r.records[0].facts if f.attrs.get("class") == "AMB"]
    assert amb and all(f.care_setting == CareSetting.gp for f in amb)


def test_ecqm_device_request_do_not_perform_and_discharge_disposition(ecqm_results):
    _, result = ecqm_results["CMS122/DENEXFail-FrailtyDeviceRequestNotPerformedTrue"]
    (dev,) = [f for f in result.records[0].facts if f.kind == FactKind.device]
    assert dev.attrs["do_not_perform"] is True and dev.codes[0].code == "183240000" and dev.attrs["intent"] == "order"
    dispositions = [f.attrs["discharge_disposition"] for _, r in ecqm_results.values() for f in r.records[0].facts
                    if "discharge_disposition" in f.attrs]
    assert {"system": "http://snomed.info/sct", "code": "428361000124107"} in [d for ds in dispositions for d in ds]


def test_ecqm_encounter_diagnosis_links_condition(ecqm_results):
    _, result = ecqm_results["CMS122/DENEXPass-FrailtyDeviceRequestNoPerformedModExt"]
    facts = facts_by_id(result)
    enc = next(f for f in facts.values() if "diagnoses" in f.attrs)
    assert enc.attrs["diagnoses"] == ["Condition/6b3e2790-9326-48d3-a349-9999ea25ff83"]
    assert enc.attrs["diagnoses"][0] in facts  # joins to the condition's fact id


def test_ecqm_records_round_trip_through_export(ecqm_results):
    for name, (_, result) in ecqm_results.items():
        exported = export_patient_bundle(result.records[0])
        Bundle.model_validate(exported)
        assert import_bundle(exported).records == result.records, name


# ---------------------------------------------------------------------------------------------
# Patients


def test_patient_demographics_practice_and_carepath_extensions():
    p = patient(
        "p1", nhs="943 476 5919", birth="1950-02-03", gender="male",
        name=[{"use": "usual", "given": ["Bob"]}, {"use": "official", "family": "Smith", "given": ["Robert", "J"]}],
        deceasedDateTime="2024-05-06T10:00:00+00:00",
        generalPractitioner=[ref("Practitioner/x"), {"identifier": {"system": ODS, "value": "a81001"}}],
        extension=[ext("locality", "Brent", "valueString"), ext("mdt", "MDT-North", "valueString"),
                   ext("registered-on", "2001-04-01", "valueDate")],
    )
    rec = import_bundle(bundle(p)).records[0]
    assert rec.patient == Patient(
        nhs_number=NHS_OK, birth_date=dt.date(1950, 2, 3), sex=Sex.male, practice="A81001", locality="Brent",
        mdt="MDT-North", death_date=dt.date(2024, 5, 6), registered_on=dt.date(2001, 4, 1),
        given_name="Robert", family_name="Smith",
    )


def test_practice_from_referenced_organization_or_extension():
    org = {"resourceType": "Organization", "id": "org1", "identifier": [{"system": ODS, "value": "B82005"}]}
    result = import_bundle(bundle(patient(generalPractitioner=[ref("Organization/org1")]), org))
    assert result.records[0].patient.practice == "B82005"
    assert result.supporting == {"Organization": 1} and result.unsupported == {}
    result = import_bundle(bundle(patient(extension=[ext("practice", "C81001")])))
    assert result.records[0].patient.practice == "C81001"


def test_pseudo_nhs_number_is_deterministic_valid_and_in_test_range():
    numbers = {pseudo_nhs_number(f"patient-{i}") for i in range(300)}
    assert len(numbers) == 300
    assert all(n.startswith("999") and is_valid_nhs_number(n) for n in numbers)
    assert pseudo_nhs_number("abc") == pseudo_nhs_number("abc")


def test_pseudo_nhs_number_steps_past_numbers_without_check_digit():
    import hashlib

    # Find an id whose first candidate has no check digit (about 1 in 11 do).
    for i in range(200):
        sid = f"id-{i}"
        first = 999_000_000 + int(hashlib.sha256(sid.encode()).hexdigest(), 16) % 1_000_000
        if check_digit(f"{first:09d}") is None:
            break
    else:
        pytest.fail("no id needing a retry found")
    n = pseudo_nhs_number(sid)
    assert is_valid_nhs_number(n) and int(n[:9]) > first


def test_patient_without_nhs_number_gets_source_id_and_warning():
    result = import_bundle(bundle(patient("abc-1")), source_system="emis")
    p = result.records[0].patient
    assert p.nhs_number == pseudo_nhs_number("abc-1") and p.source_ids == {"emis": "abc-1"}
    assert any("derived" in w for w in result.warnings)
    # With a real NHS number the FHIR id is a transport id, not an identity.
    assert import_bundle(bundle(patient("abc-1", nhs=NHS_OK))).records[0].patient.source_ids == {}


def test_several_patients_in_one_bundle_get_their_own_facts():
    result = import_bundle(bundle(
        patient("p1", nhs=NHS_OK), patient("p2"),
        resource("Condition", "c1", patient="p1", code="sct|44054006", onsetDateTime="2020-01-01"),
        resource("Condition", "c2", patient="p2", code="sct|38341003", onsetDateTime="2021-01-01"),
    ))
    assert [[f.id for f in r.facts] for r in result.records] == [["Condition/c1"], ["Condition/c2"]]


# ---------------------------------------------------------------------------------------------
# Resources -> facts


def test_condition_dates_statuses_category_and_encounter():
    enc = resource("Encounter", "e1", status="finished", **{"class": {"system": "x", "code": "IMP"}},
                   type="sct|32485007", period={"start": "2023-01-01T08:00:00Z"})
    cond = resource(
        "Condition", "c1", code=["sct|44054006|Type 2 diabetes", "icd10|E11"], onsetPeriod={"start": "2019-03-01"},
        abatementDateTime="2022-01-01T12:00:00+01:00", clinicalStatus="http://terminology.hl7.org/CodeSystem/condition-clinical|resolved",
        verificationStatus="http://terminology.hl7.org/CodeSystem/condition-ver-status|confirmed",
        category="http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item", encounter=ref("Encounter/e1"),
    )
    facts = facts_by_id(import_bundle(bundle(patient(), enc, cond)))
    f = facts["Condition/c1"]
    assert f.kind == FactKind.condition and [c.code for c in f.codes] == ["44054006", "E11"]
    assert f.codes[1].system == "http://hl7.org/fhir/sid/icd-10"
    assert f.start == dt.datetime(2019, 3, 1) and f.end == dt.datetime(2022, 1, 1, 11, 0)  # UTC
    assert f.attrs == {"clinical_status": "resolved", "verification_status": "confirmed",
                       "category": ["problem-list-item"], "encounter": "Encounter/e1"}
    assert f.care_setting == CareSetting.acute  # inherited from the inpatient encounter


def test_condition_falls_back_to_recorded_date():
    f = one_fact(resource("Condition", "c1", code="sct|1", onsetString="childhood", recordedDate="2020-02-02"))
    assert f.start == dt.datetime(2020, 2, 2)


def test_observation_quantity_prefers_ucum_code_and_keeps_comparator():
    f = one_fact(resource("Observation", "o1", status="final", code="loinc|4548-4", effectiveDateTime="2024-02-01T09:30:00Z",
                          category=["http://terminology.hl7.org/CodeSystem/observation-category|laboratory"],
                          valueQuantity=qty(61, "mmol/mol", unit="millimoles per mole", comparator=">")))
    assert (f.value, f.unit, f.status, f.start) == (61.0, "mmol/mol", "final", dt.datetime(2024, 2, 1, 9, 30))
    assert f.attrs == {"category": ["laboratory"], "comparator": ">", "unit_system": "http://unitsofmeasure.org"}
    g = one_fact(resource("Observation", "o1", status="final", code="loinc|1", effectiveDateTime="2024-02-01",
                          valueQuantity={"value": 5.5, "unit": "mmol/L"}))
    assert g.unit == "mmol/L"  # free-text unit only when there is no code


def test_observation_coded_value_absent_value_and_time_fallbacks():
    f = one_fact(resource("Observation", "o1", status="final", code="sct|1", effectivePeriod={"start": "2024-01-01", "end": "2024-01-03"},
                          valueCodeableConcept="sct|160734000|Lives in nursing home"))
    assert f.value_codes == [Coding(system="sct", code="160734000", display="Lives in nursing home")]
    assert (f.start, f.end) == (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 3))
    g = one_fact(resource("Observation", "o1", status="final", code="loinc|1", issued="2024-03-03T10:00:00Z",
                          dataAbsentReason={"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}))
    assert g.start == dt.datetime(2024, 3, 3, 10) and g.value is None and g.attrs["data_absent_reason"] == "unknown"
    h = one_fact(resource("Observation", "o1", status="final", code="loinc|1", effectiveInstant="2024-03-04T10:00:00Z",
                          dataAbsentReason="http://terminology.hl7.org/CodeSystem/data-absent-reason|not-performed"))
    assert h.start == dt.datetime(2024, 3, 4, 10) and h.attrs["data_absent_reason"] == "not-performed"


def test_observation_component_without_code_is_warned_not_dropped_silently():
    obs = resource("Observation", "bp", status="final", code="loinc|85354-9", effectiveDateTime="2024-01-01",
                   component=[{"code": cc("loinc|8480-6"), "valueQuantity": qty(150, "mm[Hg]")},
                              {"code": cc(text="diastolic"), "valueQuantity": qty(95, "mm[Hg]")}])
    result = import_bundle(bundle(patient(), obs))
    assert sorted(facts_by_id(result)) == ["Observation/bp", "Observation/bp#8480-6"]
    assert any("/entry/1/resource/component/1" in w for w in result.warnings)


def test_medication_resources_and_their_dates():
    med = {"resourceType": "Medication", "id": "m1", "code": cc("dmd|39113611000001102")}
    rx = resource("MedicationRequest", "rx1", status="active", intent="order", doNotPerform=True,
                  contained=[{"resourceType": "Medication", "id": "local", "code": cc("rxnorm|860975")}],
                  medicationReference=ref("#local"), authoredOn="2024-01-10",
                  dispenseRequest={"validityPeriod": {"start": "2024-01-10", "end": "2024-07-10"}})
    rx2 = resource("MedicationRequest", "rx2", status="active", intent="plan", medicationReference=ref("Medication/m1"),
                   dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": {"start": "2024-02-01", "end": "2024-03-01"}}}}])
    ms = resource("MedicationStatement", "ms1", status="active", medicationCodeableConcept="dmd|1", effectivePeriod={"start": "2023-01-01"})
    md = resource("MedicationDispense", "md1", status="completed", medicationCodeableConcept="dmd|2", whenHandedOver="2024-04-04")
    ma = resource("MedicationAdministration", "ma1", status="completed", medicationCodeableConcept="dmd|3", effectiveDateTime="2024-05-05")
    result = import_bundle(bundle(patient(), med, rx, rx2, ms, md, ma))
    f = facts_by_id(result)
    assert all(x.kind == FactKind.medication for x in f.values()) and len(f) == 5
    assert f["MedicationRequest/rx1"].codes[0].code == "860975"
    assert (f["MedicationRequest/rx1"].start, f["MedicationRequest/rx1"].end) == (dt.datetime(2024, 1, 10), dt.datetime(2024, 7, 10))
    assert f["MedicationRequest/rx1"].attrs == {"intent": "order", "do_not_perform": True}
    assert f["MedicationRequest/rx2"].codes[0].code == "39113611000001102"
    assert (f["MedicationRequest/rx2"].start, f["MedicationRequest/rx2"].end) == (dt.datetime(2024, 2, 1), dt.datetime(2024, 3, 1))
    assert f["MedicationStatement/ms1"].start == dt.datetime(2023, 1, 1)
    assert f["MedicationDispense/md1"].start == dt.datetime(2024, 4, 4)
    assert f["MedicationAdministration/ma1"].status == "completed"
    assert result.supporting == {"Medication": 1} and result.imported["MedicationRequest"] == 2


def test_procedure_referral_device_and_coverage():
    dev = {"resourceType": "Device", "id": "d1", "type": cc("sct|58938008|Wheelchair")}
    result = import_bundle(bundle(
        patient(), dev,
        resource("Procedure", "pr1", status="completed", code="sct|1", performedPeriod={"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T11:00:00Z"}),
        resource("ServiceRequest", "sr1", status="active", intent="order", doNotPerform=False, code="sct|2", authoredOn="2024-02-01",
                 category=["sct|3457005"]),
        resource("DeviceRequest", "dr1", status="active", intent="order", codeCodeableConcept="sct|3", occurrenceDateTime="2024-03-01"),
        resource("DeviceUseStatement", "du1", status="active", device=ref("Device/d1"), timingDateTime="2024-04-01"),
        resource("Coverage", "cov1", status="active", type="https://nahdo.org/sopt|59", payor=[{"display": "Acme"}],
                 period={"start": "2024-01-01", "end": "2024-12-31"}),
    ))
    f = facts_by_id(result)
    assert f["Procedure/pr1"].kind == FactKind.procedure and f["Procedure/pr1"].end == dt.datetime(2024, 1, 1, 11)
    sr = f["ServiceRequest/sr1"]
    assert sr.kind == FactKind.referral and sr.attrs == {"intent": "order", "do_not_perform": False, "category": ["3457005"]}
    assert f["DeviceRequest/dr1"].kind == FactKind.device and "do_not_perform" not in f["DeviceRequest/dr1"].attrs
    assert f["DeviceUseStatement/du1"].codes[0].code == "58938008"
    cov = f["Coverage/cov1"]
    assert cov.kind == FactKind.other and cov.attrs == {"payer": ["Acme"]} and cov.end == dt.datetime(2024, 12, 31)
    assert result.supporting == {"Device": 1}


@pytest.mark.parametrize("cls, setting", [("IMP", "acute"), ("ACUTE", "acute"), ("EMER", "acute"), ("HH", "community"), ("AMB", "gp"), ("VR", "gp")])
def test_encounter_class_to_care_setting(cls, setting):
    f = one_fact(resource("Encounter", "e1", status="finished", **{"class": {"code": cls}}, period={"start": "2024-01-01"}))
    assert f.care_setting == CareSetting(setting) and f.attrs["class"] == cls
    assert f.codes == [Coding(code=cls)]  # no type: the class coding stands in


def test_care_setting_extension_wins_and_is_inherited():
    enc = resource("Encounter", "e1", status="finished", **{"class": {"code": "AMB"}}, type="sct|1", period={"start": "2024-01-01"},
                   extension=[ext("care-setting", "mental-health")], diagnosis=[{"condition": ref("Condition/c1")}])
    cond = resource("Condition", "c1", code="sct|2", onsetDateTime="2024-01-01")
    obs = resource("Observation", "o1", status="final", code="sct|3", effectiveDateTime="2024-01-01",
                   encounter=ref("Encounter/e1"), extension=[ext("care-setting", "social-care")])
    orphan = resource("Observation", "o2", status="final", code="sct|3", effectiveDateTime="2024-01-01", encounter=ref("Encounter/elsewhere"))
    f = facts_by_id(import_bundle(bundle(patient(), enc, cond, obs, orphan)))
    assert f["Encounter/e1"].care_setting == CareSetting.mental_health
    assert f["Condition/c1"].care_setting == CareSetting.mental_health  # via Encounter.diagnosis
    assert f["Observation/o1"].care_setting == CareSetting.social_care
    assert f["Observation/o2"].care_setting == CareSetting.gp and f["Observation/o2"].attrs["encounter"] == "Encounter/elsewhere"


def test_exception_extension_makes_an_exception_fact():
    f = one_fact(resource("Procedure", "x1", status="not-done", code="sct|717451000000108", performedDateTime="2024-01-01",
                          extension=[ext("exception-type", "declined")]))
    assert f.kind == FactKind.exception and f.exception_type == ExceptionType.declined
    g = one_fact(resource("Procedure", "x1", status="not-done", code="sct|717451000000108", performedDateTime="2024-01-01"))
    assert g.kind == FactKind.procedure and g.exception_type is None


def test_unsupported_types_are_counted_and_unusable_entries_skipped_with_reasons():
    result = import_bundle(bundle(
        patient(),
        {"resourceType": "Practitioner", "id": "gp1"},
        {"resourceType": "Practitioner", "id": "gp2"},
        {"resourceType": "Location", "id": "l1"},
        {"resourceType": "Medication", "id": "unused", "code": cc("dmd|1")},
        resource("Condition", "text-only", code={"text": "diabetes"}, onsetDateTime="2020-01-01"),
        resource("Condition", "no-date", code="sct|1"),
        resource("Condition", "orphan", patient="nobody", code="sct|1", onsetDateTime="2020-01-01"),
        resource("Observation", "mod", status="final", code="sct|1", effectiveDateTime="2020-01-01",
                 modifierExtension=[{"url": "http://example.org/negated", "valueBoolean": True}]),
        resource("MedicationRequest", "rx", status="active", intent="order", medicationReference=ref("Medication/missing"), authoredOn="2024-01-01"),
        resource("Condition", "ok", code="sct|1", onsetDateTime="2020-01-01"),
    ))
    assert result.unsupported == {"Practitioner": 2, "Location": 1, "Medication": 1}
    assert [f.id for f in result.records[0].facts] == ["Condition/ok"]
    reasons = "\n".join(result.skipped)
    assert len(result.skipped) == 5
    for needle in ("Condition/text-only: no usable code", "Condition/no-date: no date", "'Patient/nobody' is not a Patient in this bundle",
                   "Observation/mod: modifierExtension http://example.org/negated", "MedicationRequest/rx: medicationReference 'Medication/missing'"):
        assert needle in reasons


def test_source_system_is_stamped_on_every_fact():
    f = one_fact(resource("Condition", "c1", code="sct|1", onsetDateTime="2020-01-01"), source_system="acute-epr")
    assert f.source_system == "acute-epr"


def test_partial_dates_are_taken_as_first_day_with_a_warning():
    result = import_bundle(bundle(patient(birth="1970"), resource("Condition", "c1", code="sct|1", onsetDateTime="2019-06")))
    assert result.records[0].patient.birth_date == dt.date(1970, 1, 1)
    assert result.records[0].facts[0].start == dt.datetime(2019, 6, 1)
    assert sum("partial date" in w for w in result.warnings) == 2


# ---------------------------------------------------------------------------------------------
# Malformed input -> BundleError with a JSON pointer


def _error(data) -> BundleError:
    with pytest.raises(BundleError) as info:
        import_bundle(data)
    return info.value


def _good():
    return bundle(patient(nhs=NHS_OK), resource("Condition", "c1", code="sct|1", onsetDateTime="2020-01-01"),
                  resource("Encounter", "e1", status="finished", **{"class": {"code": "AMB"}}, period={"start": "2024-01-01"}),
                  resource("Observation", "o1", status="final", code="loinc|1", effectiveDateTime="2024-01-01", valueQuantity=qty(5, "%")))


def test_good_bundle_is_good():
    assert import_bundle(_good()).fact_count == 3


@pytest.mark.parametrize("mutate, pointer, words", [
    (lambda b: [], "", "JSON object"),
    (lambda b: {**b, "resourceType": "Patient"}, "/resourceType", "Bundle"),
    (lambda b: {**b, "type": "history"}, "/type", "history"),
    (lambda b: {**b, "timestamp": "yesterday"}, "/timestamp", "Bundle"),
    (lambda b: b["entry"].__setitem__(1, {"request": {"method": "DELETE", "url": "Condition/c1"}}) or b, "/entry/1", "no resource"),
    (lambda b: b["entry"][3]["resource"]["valueQuantity"].__setitem__("value", "lots") or b, "/entry/3/resource/valueQuantity/value", "Observation"),
    (lambda b: b["entry"][2]["resource"].__setitem__("class", "AMB") or b, "/entry/2/resource/class", "Encounter"),
    (lambda b: b["entry"][1]["resource"].__setitem__("onsetDateTime", "2020-13-45") or b, "/entry/1/resource/onsetDateTime", "Condition"),
    (lambda b: b["entry"][1]["resource"].__setitem__("resourceType", "Conditon") or b, "/entry/1/resource/resourceType", "Conditon"),
    (lambda b: b["entry"][1]["resource"].__setitem__("abatementDateTime", "2019-01-01") or b, "/entry/1/resource/abatementDateTime", "before it starts"),
    (lambda b: b["entry"][3]["resource"]["valueQuantity"].__setitem__("value", float("nan")) or b, "/entry/3/resource/valueQuantity/value", ""),
    (lambda b: b["entry"][0]["resource"].pop("birthDate") and b, "/entry/0/resource/birthDate", "birthDate"),
    (lambda b: b["entry"][0]["resource"]["identifier"][0].__setitem__("value", "9434765918") or b, "/entry/0/resource/identifier/0/value", "Modulus 11"),
    (lambda b: b["entry"][0]["resource"].__setitem__("generalPractitioner", [{"identifier": {"system": ODS, "value": "RYJ"}}]) or b,
     "/entry/0/resource/generalPractitioner/0/identifier/value", "ODS"),
    (lambda b: b["entry"][0]["resource"].__setitem__("deceasedDateTime", "1900-01-01") or b, "/entry/0/resource/deceasedDateTime", "before"),
    (lambda b: b["entry"][1]["resource"].__setitem__("extension", [ext("exception-type", "refused")]) or b, "/entry/1/resource/extension/0", "refused"),
    (lambda b: b["entry"][2]["resource"].__setitem__("extension", [ext("care-setting", "hospital")]) or b, "/entry/2/resource/extension/0", "hospital"),
])
def test_malformed_input_points_at_the_problem(mutate, pointer, words):
    err = _error(mutate(copy.deepcopy(_good())))
    assert err.pointer == pointer, str(err)
    assert words in err.message


def test_identical_repeat_of_a_resource_is_merged_with_a_note():
    b = _good()
    b["entry"].append(copy.deepcopy(b["entry"][3]))  # the same Observation, same fullUrl, same content
    result = import_bundle(b)
    (rec,) = result.records
    assert [f.id for f in rec.facts].count("Observation/o1") == 1 and result.fact_count == 3
    (note,) = facts_by_id(result)["Observation/o1"].attrs["data_quality"]
    assert "identical" in note and "/entry/3" in note and "/entry/4" in note
    assert any(w.startswith("/entry/4/resource: ") and "merged" in w for w in result.warnings)


def test_different_resources_under_one_full_url_are_both_kept_with_a_note():
    """CMS22's decks send two ServiceRequests with one fullUrl and id but different codes: refusing the
    bundle lost the patient's whole record; keeping one would drop a declined referral."""
    b = _good()
    second = copy.deepcopy(b["entry"][3])
    second["resource"]["code"] = cc("loinc|2")
    b["entry"].append(second)
    result = import_bundle(b)
    f = facts_by_id(result)
    assert f["Observation/o1"].codes[0].code == "1" and f["Observation/o1~2"].codes[0].code == "2"
    assert f["Observation/o1"].attrs["data_quality"] == f["Observation/o1~2"].attrs["data_quality"]
    assert "different content" in f["Observation/o1~2"].attrs["data_quality"][0]
    assert import_bundle(b) == result  # the same bundle again gives the same fact ids (idempotent ingest)
    # The same Type/id under another fullUrl is the same resource sent twice as well.
    b2 = _good()
    b2["entry"][1]["resource"].update(resourceType="Observation", id="o1", status="final", effectiveDateTime="2020-01-01")
    b2["entry"][1]["resource"].pop("onsetDateTime")
    f2 = facts_by_id(import_bundle(b2))
    assert {"Observation/o1", "Observation/o1~2"} <= set(f2) and "resource Observation/o1" in f2["Observation/o1"].attrs["data_quality"][0]


def test_order_authored_after_its_dosing_period_is_kept_without_that_end():
    """CMS144: a MedicationRequest authored 2026-07-03 whose dosage boundsPeriod ends 2026-05-19. The
    order and its date are certain; the contradicting end is not used, and the record says so."""
    rx = resource("MedicationRequest", "rx1", status="active", intent="order", medicationCodeableConcept="rxnorm|854916",
                  authoredOn="2026-07-03T11:50:00Z",
                  dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": {"end": "2026-05-19T14:40:00Z"}}}}])
    result = import_bundle(bundle(patient(), rx))
    f = facts_by_id(result)["MedicationRequest/rx1"]
    assert (f.start, f.end) == (dt.datetime(2026, 7, 3, 11, 50), None)
    assert "dosageInstruction period ends 2026-05-19T14:40" in f.attrs["data_quality"][0] and "start 2026-07-03T11:50" in f.attrs["data_quality"][0]
    assert any("/entry/1/resource/dosageInstruction" in w for w in result.warnings)
    # A period that contradicts itself (one element, start after end) is still refused with a pointer.
    rx["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"] = "2026-06-01"
    rx.pop("authoredOn")
    assert _error(bundle(patient(), rx)).pointer == "/entry/1/resource/dosageInstruction"


def test_two_patients_with_one_nhs_number_is_an_error():
    err = _error(bundle(patient("a", nhs=NHS_OK), patient("b", nhs=NHS_OK)))
    assert err.pointer == "/entry/1/resource" and "/entry/0" in err.message


def test_error_message_includes_pointer():
    err = _error({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "gender": 7}}]})
    assert str(err).startswith("/entry/0/resource/gender: ")


# ---------------------------------------------------------------------------------------------
# Export


def demo_record() -> PatientRecord:
    """A record like our own demo data: non-FHIR ids, every kind, values where FHIR has no place."""
    s = "gp-system"
    d = dt.datetime
    facts = [
        Fact(id="dx-1", kind="condition", codes=[Coding(system="sct", code="44054006", display="T2DM"), Coding(system="icd10", code="E11")],
             start=d(2015, 3, 1), status="active", attrs={"clinical_status": "active", "note": {"any": ["json", 1]}}),
        Fact(id="hba1c-2024", kind="observation", codes=[Coding(system="loinc", code="4548-4")], start=d(2024, 2, 1, 9, 30, 15, 123000),
             value=61.0, unit="mmol/mol", status="final"),
        Fact(id="bp#8480-6", kind="observation", codes=[Coding(system="loinc", code="8480-6")], start=d(2024, 2, 1), value=150.0, unit="mm[Hg]"),
        Fact(id="home", kind="observation", codes=[Coding(system="sct", code="365508006")], start=d(2023, 1, 1),
             value_codes=[Coding(system="sct", code="160734000")]),
        Fact(id="rx/metformin", kind="medication", codes=[Coding(system="dmd", code="39113611000001102")], start=d(2023, 1, 1),
             end=d(2024, 1, 1), status="active", attrs={"intent": "order", "do_not_perform": False}),
        Fact(id="Procedure/foot-1", kind="procedure", codes=[Coding(system="sct", code="401191002")], start=d(2024, 3, 3), status="completed",
             care_setting="community"),
        Fact(id="adm 1", kind="encounter", codes=[Coding(system="sct", code="32485007")], start=d(2022, 5, 1), end=d(2022, 5, 4),
             status="finished", care_setting="acute", attrs={"class": "IMP", "diagnoses": ["dx-1"]}),
        Fact(id="ref-1", kind="referral", codes=[Coding(system="sct", code="183515008")], start=d(2024, 4, 1), attrs={"intent": "order", "encounter": "adm 1"}),
        Fact(id="dev-1", kind="device", codes=[Coding(system="sct", code="58938008")], start=d(2024, 4, 2), attrs={"do_not_perform": True}),
        Fact(id="exc-1", kind="exception", exception_type="declined", codes=[Coding(system="sct", code="717451000000108")], start=d(2024, 5, 1),
             care_setting="mental-health"),
        Fact(id="frailty-score", kind="other", codes=[Coding(system="sct", code="713636003")], start=d(2024, 6, 1), value=6.0, status="final",
             care_setting="social-care"),
        Fact(id="cond-val", kind="condition", codes=[Coding(system="sct", code="1")], start=d(2020, 1, 1), value=2.0, unit="{stage}",
             value_codes=[Coding(system="sct", code="2")]),
    ]
    patient_ = Patient(nhs_number=NHS_OK, birth_date=dt.date(1958, 7, 1), sex="female", practice="A81001", locality="Brent", mdt="MDT-1",
                       registered_on=dt.date(1990, 1, 1), death_date=dt.date(2025, 1, 1), given_name="Ann", family_name="Jones",
                       source_ids={"gp-system": "E123", "fhir": "abc"})
    # Mostly one source; two facts from another, one sharing a fact id with the first source.
    facts = [f.model_copy(update={"source_system": s}) for f in facts]
    facts += [Fact(id="dx-1", kind="condition", codes=[Coding(system="sct", code="73211009")], start=d(2016, 1, 1), source_system="acute-pas",
                   care_setting="acute", attrs={"encounter": "adm-9"}),
              Fact(id="adm-9", kind="encounter", codes=[Coding(system="sct", code="183452005")], start=d(2016, 1, 1), end=d(2016, 1, 3),
                   source_system="acute-pas", care_setting="acute", status="finished", attrs={"class": "EMER"})]
    return PatientRecord(patient=patient_, facts=facts)


def test_export_is_valid_r4_and_round_trips_our_demo_data():
    rec = demo_record()
    out = export_patient_bundle(rec)
    assert out["type"] == "collection" and len(out["entry"]) == 1 + len(rec.facts)
    Bundle.model_validate(out)
    json.dumps(out)  # plain JSON, ready to send
    back = import_bundle(out, source_system="ignored-for-our-own-exports")
    assert back.skipped == [] and back.unsupported == {}
    assert back.records == [rec]  # including each fact's source system (meta.source)


def test_the_demo_patients_round_trip():
    from engine.synthetic.demo import demo_records

    records = demo_records(dt.date(2026, 3, 1))
    assert records and len({f.source_system for r in records for f in r.facts}) > 1
    for rec in records:
        assert import_bundle(export_patient_bundle(rec)).records == [rec], rec.patient.nhs_number


def test_meta_source_is_only_honoured_in_carepath_form():
    ours = resource("Condition", "c1", code="sct|1", onsetDateTime="2020-01-01", meta={"source": "https://carepath.example/fhir/source/desp"})
    theirs = resource("Condition", "c2", code="sct|1", onsetDateTime="2020-01-01", meta={"source": "https://emis.example/#a1b2"})
    f = facts_by_id(import_bundle(bundle(patient(), ours, theirs), source_system="feed"))
    assert (f["Condition/c1"].source_system, f["Condition/c2"].source_system) == ("desp", "feed")


def test_export_uses_native_fhir_elements():
    out = export_patient_bundle(demo_record())
    res = {e["resource"]["resourceType"] + ":" + str(e["resource"].get("identifier", [{}])[0].get("value")): e["resource"] for e in out["entry"]}
    obs = res["Observation:hba1c-2024"]
    assert obs["valueQuantity"] == {"value": 61.0, "unit": "mmol/mol", "system": "http://unitsofmeasure.org", "code": "mmol/mol"}
    assert obs["effectiveDateTime"] == "2024-02-01T09:30:15.123000+00:00" and obs["status"] == "final"
    enc = res["Encounter:adm 1"]
    assert enc["class"]["code"] == "IMP" and enc["period"]["end"].startswith("2022-05-04")
    assert enc["diagnosis"][0]["condition"]["reference"].startswith("Condition/")
    assert res["MedicationStatement:rx/metformin"]["medicationCodeableConcept"]["coding"][0]["system"] == "https://dmd.nhs.uk"
    assert res["DeviceRequest:dev-1"]["modifierExtension"][0]["valueBoolean"] is True
    # Native elements alone (without our private extras) still import to the same essentials.
    stripped = copy.deepcopy(out)
    for e in stripped["entry"]:
        e["resource"]["extension"] = [x for x in e["resource"].get("extension", []) if not x["url"].endswith("fact-extra")]
    f = {x.id: x for x in import_bundle(stripped).records[0].facts if x.source_system == "gp-system"}
    assert (f["hba1c-2024"].value, f["hba1c-2024"].unit, f["hba1c-2024"].status) == (61.0, "mmol/mol", "final")
    assert f["adm 1"].attrs["diagnoses"] == ["dx-1"] and f["adm 1"].care_setting == CareSetting.acute
    assert f["ref-1"].attrs == {"intent": "order", "encounter": "adm 1"}
    assert f["frailty-score"].kind == FactKind.other and f["exc-1"].kind == FactKind.exception
