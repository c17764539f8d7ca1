from tests.api.support import AMINA


def test_health_and_openapi(api):
    r = api.client.get("/health")
    assert r.status_code == 200 and r.json()["protocols"] == ["t2dm-annual-care@1.0.0"]
    assert "/worklist" in api.client.get("/openapi.json").json()["paths"]


def test_care_plan(api):
    r = api.get(f"/patients/{AMINA}/care-plan")
    assert r.status_code == 200, r.text
