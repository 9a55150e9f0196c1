"""The review console in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium against a real server on loopback. Each flow
is done through the page and then checked in the catalog through the SDK.

Without Chromium these tests are skipped, unless FACEBANK_REQUIRE_BROWSER=1 (set by
.ci/run), where a missing browser is a failure."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import FACES, make_config, single_person_photos
from facebank.client import Client
from facebank.errors import NotFound
from facebank.index import identities
from facebank.index.sealed_faces import NewFace
from facebank.server.app import start
from facebank.server.auth import ApiKeys
from facebank.server.engine import Engine
from facebank.transport import LocalTransport
from facebank.v1 import facebank_pb2 as pb

PEOPLE = single_person_photos()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
WAIT_S = 30


def _browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("FACEBANK_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium is required here: apt-get install -y chromium chromium-driver")
        pytest.skip("no Chromium on this machine (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


class Console:
    """A browser on the console of one running server, with an admin key typed in."""

    def __init__(self, driver, base: str, key: str, shots) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.base, self.key, self.shots = driver, base, key, shots
        self.wait = WebDriverWait(driver, WAIT_S)

    def open(self, hash_: str = "#/") -> None:
        from selenium.webdriver.common.by import By

        self.d.get(f"{self.base}/console/{hash_}")
        field = self.d.find_element(By.ID, "api-key")
        if field.get_attribute("value") != self.key:
            field.clear()
            field.send_keys(self.key)
            self.d.find_element(By.CSS_SELECTOR, "#key-form button").click()

    def go(self, hash_: str) -> None:
        """Navigate inside the page and wait until the new page is on screen."""
        self.d.execute_script("location.hash = arguments[0]", hash_)
        self.until(lambda: self.d.execute_script("return document.getElementById('view').dataset.route") == hash_, f"page {hash_}")

    def find(self, css: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.d.find_elements(By.CSS_SELECTOR, css)

    def click(self, css: str) -> None:
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", self.find(css))
        self.find(css).click()

    def confirm(self) -> None:
        self.click("#confirm-ok")

    def until(self, predicate, what: str):
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException

        def check(_):
            try:
                return predicate()
            except StaleElementReferenceException:  # the page re-rendered under us: look again
                return False

        try:
            return self.wait.until(check, message=what)
        except TimeoutException:
            self.shot("timeout")
            logs = [e["message"] for e in self.d.get_log("browser")][-5:]
            raise AssertionError(f"timed out waiting for: {what}; the page says: {self.error() or self.notice() or '(nothing)'}; "
                                 f"console: {logs}") from None

    def notice(self) -> str:
        return self.d.execute_script("return document.getElementById('notice').hidden ? '' : document.getElementById('notice').textContent")

    def error(self) -> str:
        return self.d.execute_script("return document.getElementById('error').hidden ? '' : document.getElementById('error').textContent")

    def shot(self, name: str) -> None:
        self.d.save_screenshot(str(self.shots / f"{name}.png"))


@pytest.fixture
def site(tmp_path, embedder):
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    admin = ApiKeys(engine.store).create("console", "admin", [])[1]
    running = start(make_config(tmp_path / "data", http="127.0.0.1:0"), engine=engine)
    driver = _browser()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    fb = Client(LocalTransport(engine))
    try:
        yield Console(driver, f"http://{running.http.address}", admin, shots), fb, engine
    finally:
        driver.quit()
        fb.close()
        running.stop(grace=2)


def _thumbs_loaded(ui: Console) -> int:
    return ui.d.execute_script("return [...document.querySelectorAll('img.thumb.loaded')].filter(i => i.complete && i.naturalWidth > 0).length")


def test_identities_show_their_faces_and_a_forget_shows_its_receipt(site):
    ui, fb, _ = site
    fb.enroll("obama", [p.path for p in PEOPLE["obama"][:2]], display_name="Barack Obama")
    fb.enroll("biden", [PEOPLE["biden"][0].path], display_name="Joe Biden")
    ui.open("#/")
    row = ui.find('tr[data-collection="default"]')
    assert "2" in row.text and "3" in row.text  # identities, faces
    ui.shot("collections")
    ui.click('tr[data-collection="default"] a')
    ui.find('a.card[data-identity="obama"]')
    assert {c.get_attribute("data-identity") for c in ui.all("a.card")} == {"obama", "biden"}
    ui.until(lambda: _thumbs_loaded(ui) == 3, "every face's thumbnail loaded")
    size = ui.d.execute_script("return document.querySelector('img.thumb.loaded').naturalWidth")
    crop = Image.open(io.BytesIO(fb.face_crop(fb.get_identity("obama").faces[0].face_id).image))
    assert size == crop.width  # the kept crop itself, fetched with the key
    ui.shot("identities")

    ui.click('a.card[data-identity="obama"]')
    ui.find("#forget")
    faces = [c.get_attribute("data-face") for c in ui.all(".card[data-face]")]
    assert sorted(faces) == sorted(str(f.face_id) for f in fb.get_identity("obama").faces)
    ui.click(f'.card[data-face="{faces[0]}"] .delete-face')
    ui.confirm()
    ui.until(lambda: "deleted" in ui.notice(), "the delete was reported")
    assert [str(f.face_id) for f in fb.get_identity("obama").faces] == faces[1:]
    ui.until(lambda: len(ui.all(".card[data-face]")) == 1, "the page shows the one face left")

    ui.click("#forget")
    ui.click("#confirm-cancel")  # cancelling changes nothing
    assert fb.get_identity("obama").face_count == 1
    ui.click("#forget")
    ui.confirm()
    receipt = json.loads(ui.find("#receipt").text)
    ui.shot("receipt")
    assert receipt["removed"]["faces"] == "1" and receipt["verification"]["passed"] is True
    assert receipt["signature"] and receipt["hash"] == fb.receipts().receipts[-1].hash
    with pytest.raises(NotFound):
        fb.get_identity("obama")
    assert fb.get_identity("biden").face_count == 1


def _photos_clustered(fb) -> dict[str, list[int]]:
    """Ingest two or three photos of each of four people and cluster them; face ids per person."""
    fb.create_collection("photos")
    by_person = {}
    for person in ("obama", "alex_lacamoire", "kit_harington", "biden"):
        by_person[person] = []
        for p in PEOPLE[person]:
            item = pb.IngestItem(item_id=p.path.name, collection="photos", image=pb.Image(data=p.data, source_ref=p.path.name))
            faces = [f for r in fb.ingest([item]) for f in r.faces]
            by_person[person] += [faces[0].face_id] if len(faces) == 1 else []
            if len(by_person[person]) == 3:
                break
        assert len(by_person[person]) >= 2, person
    lone = PEOPLE["angelina_jolie"][0]
    item = pb.IngestItem(item_id=lone.path.name, collection="photos", image=pb.Image(data=lone.data, source_ref=lone.path.name))
    by_person["lone"] = [f.face_id for r in fb.ingest([item]) for f in r.faces]  # nobody to cluster with
    return by_person


def _cluster_of(fb, face_id: int) -> int:
    for c in fb.list_clusters(collection="photos", include_faces=True).clusters:
        if face_id in {f.face_id for f in c.faces}:
            return c.cluster_id
    return 0


def test_clusters_are_run_merged_split_moved_cleaned_and_named(site):
    ui, fb, _ = site
    people = _photos_clustered(fb)
    ui.open("#/c/photos/clusters")
    ui.find("#run")
    ui.click("#run")
    ui.until(lambda: ui.notice().startswith("done:"), "clustering ran to the end")
    clusters = fb.list_clusters(collection="photos").clusters
    assert sorted(c.size for c in clusters) == sorted(len(f) for p, f in people.items() if p != "lone")
    ui.until(lambda: len(ui.all(".card[data-cluster]")) == 4, "four clusters shown")
    ui.shot("clusters")
    waiting = fb.list_clusters(collection="photos", unclustered_only=True)
    assert not waiting.clusters and [f.face_id for f in waiting.unclustered] == people["lone"]
    ui.go("#/c/photos/unclustered")
    ui.find(f'.card[data-face="{people["lone"][0]}"]')
    assert len(ui.all(".card[data-face]")) == 1
    ui.go("#/c/photos/clusters")

    obama, biden = _cluster_of(fb, people["obama"][0]), _cluster_of(fb, people["biden"][0])
    ui.click(f'.card[data-cluster="{obama}"] input[data-pick]')
    ui.click(f'.card[data-cluster="{biden}"] input[data-pick]')
    ui.click("#merge")
    ui.until(lambda: "Merged" in ui.notice(), "the merge was reported")
    merged = _cluster_of(fb, people["obama"][0])
    assert merged == _cluster_of(fb, people["biden"][0]) and len(fb.list_clusters(collection="photos").clusters) == 3

    ui.go(f"#/c/photos/k/{merged}")
    ui.find(f'.card[data-face="{people["biden"][0]}"]')
    for fid in people["biden"]:
        ui.click(f'.card[data-face="{fid}"] input[data-pick]')
    ui.shot("cluster-split")
    ui.click("#split")
    ui.until(lambda: "Split" in ui.notice(), "the split was reported")
    split = _cluster_of(fb, people["biden"][0])
    assert split not in (0, merged) and {_cluster_of(fb, f) for f in people["biden"]} == {split}
    assert {_cluster_of(fb, f) for f in people["obama"]} == {merged}

    kit = _cluster_of(fb, people["kit_harington"][0])
    ui.go(f"#/c/photos/k/{merged}")
    ui.click(f'.card[data-face="{people["obama"][2]}"] input[data-pick]')
    ui.find("#move-into").send_keys(str(kit))
    ui.click("#move")
    ui.until(lambda: "Moved" in ui.notice(), "the move was reported")
    assert _cluster_of(fb, people["obama"][2]) == kit

    ui.go(f"#/c/photos/k/{kit}")
    ui.click(f'.card[data-face="{people["obama"][2]}"] input[data-pick]')
    ui.click("#not-person")
    ui.confirm()
    ui.until(lambda: "Deleted" in ui.notice(), "the delete was reported")
    assert _cluster_of(fb, people["obama"][2]) == 0
    assert people["obama"][2] not in {f.face_id for f in fb.list_clusters(collection="photos", include_faces=True).unclustered}

    ui.find("#name-id").send_keys("kit")
    ui.find("#name-display").send_keys("Kit Harington")
    ui.click("#name")
    ui.until(lambda: ui.d.current_url.endswith("#/c/photos/i/kit"), "the page moved to the new identity")
    kit_identity = fb.get_identity("kit", collection="photos")
    assert kit_identity.display_name == "Kit Harington"
    assert sorted(f.face_id for f in kit_identity.faces) == sorted(people["kit_harington"])
    ui.find(".card[data-face]")
    ui.shot("named")
    assert not ui.error()

    # A new photo waits unclustered until the next pass; the page suggests who it is.
    fb.name_cluster(merged, "obama", collection="photos", display_name="Barack Obama")
    newcomer = next(p for p in PEOPLE["obama"][3:] if p.faces == 1)
    item = pb.IngestItem(item_id=newcomer.path.name, collection="photos", image=pb.Image(data=newcomer.data, source_ref=newcomer.path.name))
    (face,) = [f.face_id for r in fb.ingest([item]) for f in r.faces]
    suggested = fb.list_clusters(collection="photos", unclustered_only=True, suggest=True).suggestions
    assert [(s.face_id, s.identity_id, s.cluster_id) for s in suggested] == [(face, "obama", merged)]  # the lone face resembles nobody
    ui.go("#/c/photos/unclustered")
    card = ui.find(f'.card[data-face="{face}"] .suggestion[data-suggests="obama"]')
    assert "Barack Obama" in card.text
    assert ui.all(f'.card[data-face="{people["lone"][0]}"] .suggestion') == []
    ui.shot("suggestions")
    ui.click(f'.card[data-face="{face}"] button.accept')
    ui.until(lambda: "added to Barack Obama" in ui.notice(), "the suggestion was accepted")
    assert face in {f.face_id for f in fb.get_identity("obama", collection="photos").faces}


def test_search_boxes_every_face_with_its_matches_or_unknown(site):
    ui, fb, _ = site
    fb.enroll("obama", [PEOPLE["obama"][0].path], display_name="Barack Obama")
    fb.enroll("biden", [PEOPLE["biden"][0].path], display_name="Joe Biden")
    ui.open("#/search")
    ui.find("#search-file").send_keys(str(FACES / "groups" / "obama_and_biden.jpg"))
    ui.until(lambda: len(ui.all("#matches li")) == 3 and len(ui.all(".photo .box")) == 3, "three faces boxed")  # a child at the edge
    labels = {b.text.split(" ", 1)[1].rsplit(" ", 1)[0] for b in ui.all(".photo .box:not(.unknown)")}
    assert labels == {"Barack Obama", "Joe Biden"} and len(ui.all(".photo .box.unknown")) == 1
    ui.shot("search")


def test_pages_stay_usable_at_ten_thousand_identities_and_a_hundred_thousand_faces(site, embedder):
    ui, fb, engine = site
    crop = fb.enroll("seed", [PEOPLE["obama"][0].path]).images[0].face.face_id
    jpeg = fb.face_crop(crop).image
    rng = np.random.default_rng(7)
    for start_at in range(0, 10_000, 1_000):
        entries = []
        for i in range(start_at, start_at + 1_000):
            v = rng.standard_normal((10, embedder.spec.embedding_dim)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            faces = [NewFace([0, 0, 90, 90], [[0, 0]] * 5, 0.9, {"passed": True, "face_size": 90}, v[j], f"{i * 10 + j:064x}", f"p{i}-{j}.jpg",
                             embedder.spec.model_id, jpeg) for j in range(10)]
            entries.append((f"person-{i:05d}", f"Person {i}", {}, faces))
        identities.enroll_many(engine.store, "default", entries)
    assert fb.describe_collection("default").stats.faces == 100_001

    ui.d.set_window_size(1000, 700)
    ui.open("#/c/default")
    ui.find("a.card[data-identity]")
    first = [c.get_attribute("data-identity") for c in ui.all("a.card")]
    assert len(first) == 48
    ui.until(lambda: _thumbs_loaded(ui) > 0, "visible thumbnails loaded")
    fetched = ui.d.execute_script("return performance.getEntriesByType('resource').filter(e => e.name.includes('/crop.jpg')).length")
    shown = len(ui.all("img.thumb"))
    assert shown == 48 * 4 and 0 < fetched < shown / 2  # only thumbnails near the viewport are fetched
    ui.shot("identities-10k")
    ui.click("#next")
    ui.until(lambda: ui.find("a.card").get_attribute("data-identity") not in first, "the second page")
    second = [c.get_attribute("data-identity") for c in ui.all("a.card")]
    assert len(second) == 48 and not set(first) & set(second) and min(second) > max(first)
    ui.click("#prev")
    ui.until(lambda: [c.get_attribute("data-identity") for c in ui.all("a.card")] == first, "back to the first page")
    ui.go("#/c/default/i/person-09999")
    ui.until(lambda: len(ui.all(".card[data-face]")) == 10, "one identity's ten faces")
    assert not ui.error()


def test_the_console_ships_in_the_package_and_loads_nothing_from_elsewhere(tmp_path, embedder):
    import re

    import httpx

    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    running = start(make_config(tmp_path / "data", http="127.0.0.1:0"), engine=engine)
    try:
        base = f"http://{running.http.address}"
        assert httpx.get(f"{base}/console").status_code in (302, 307)
        page = httpx.get(f"{base}/console/")
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
        for name in ("console.js", "console.css"):
            asset = httpx.get(f"{base}/console/{name}")
            assert asset.status_code == 200 and asset.headers["x-content-type-options"] == "nosniff"
            assert not re.search(r"https?://", asset.text), f"{name} refers to another site"
        assert not re.search(r"(src|href)=\"https?://", page.text)
        assert "innerHTML" not in httpx.get(f"{base}/console/console.js").text  # catalog text is only ever set as text
        assert httpx.get(f"{base}/console/server.py").status_code == 404
    finally:
        running.stop(grace=2)
