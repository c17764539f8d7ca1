from tests.api.support import AMINA


def test_health_and_openapi(api):
    r = api.client.get("/health")
    assert r.status_code == 200 and r.json()["protocols"] == ["t2dm-annual-care@1.0.0"]
    assert "/worklist" in api.client.get("/openapi.json").json()["paths"]


def test_care_plan(api):
    r = api.get(f"/patients/{AMINA}/care-plan")
    assert r.status_code == 200, r.text


def test_what_lives_as_long_as_the_service_is_out_of_the_full_collections(api):
    """api/heap.py: the app's lifespan froze the objects alive at its start; they go back to the collector
    when the last app serving stops, not before."""
    import gc

    from api import heap

    assert gc.get_freeze_count() > 0
    heap.freeze_long_lived()  # a second app starts and stops: the first is still serving
    heap.thaw()
    assert gc.get_freeze_count() > 0
