"""The web page in a real browser: Debian's Chromium driven by Playwright.

A real cheroot server (the production WSGI server) serves a real data folder; the browser
logs in, uploads a recording, sees the verdict and both pictures, plays the audio, assigns
the recording to a patient and exports CSV. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, reference_wavs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
pytestmark = pytest.mark.browser


def _require_browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: tools/bootstrap.sh test installs it")
        pytest.skip("chromium not installed")
    return pytest.importorskip("playwright.sync_api")


@pytest.fixture
def live_server(heartpi_config):
    from webui import create_app
    from webui.passwords import hash_password
    from webui.serve import make_server

    app = create_app({"HEARTPI_CONFIG": heartpi_config})
    store = app.extensions["heartpi_store"]
    store.add_user(email="nurse@clinic.test", password_hash=hash_password(PASSWORD), role="clinician", actor="test")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = make_server(app, "127.0.0.1", port)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", store
    server.stop()
    store.close()


@pytest.fixture
def page():
    sync_api = _require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"])
        context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
        pg = context.new_page()
        errors = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.console_errors = errors
        yield pg
        context.close()
        browser.close()


def _poll(page, selector: str, expression: str, timeout: float = 10.0):
    """Wait until ``expression`` (a JS function of the element) is truthy.

    Playwright's wait_for_function evaluates a string, which our CSP (no 'unsafe-eval')
    rightly refuses, so poll with element functions instead.
    """
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.eval_on_selector(selector, expression)
        if value:
            return value
        page.wait_for_timeout(100)
    raise AssertionError(f"{selector}: {expression} still false after {timeout} s")


def _axe_violations(page) -> list[tuple]:
    """What axe-core (Deque's accessibility engine: WCAG 2 A and AA rules and best practices) finds
    on the page as it stands: ``(rule, impact, elements)`` per rule broken. Run through the
    DevTools protocol, which the page's CSP does not govern (a script tag would be refused)."""
    try:
        import axe_playwright_python
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("axe-playwright-python (the test extra) not installed")
    page.evaluate((Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [(v["id"], v["impact"], [n["target"] for n in v["nodes"]]) for v in result["violations"]]


def _assert_accessible(page) -> None:
    """Staff with a screen reader or poor sight use the page too: nothing unnamed (a list box,
    a column), nothing too faint to read, whatever axe-core calls a violation."""
    found = _axe_violations(page)
    assert not found, (page.url, found)


def test_the_accessibility_check_finds_what_it_looks_for(page):
    """The check can fail: an unnamed list box, faint text and an empty column header are found."""
    page.set_content('<html lang="en"><head><title>t</title></head><body><main><h1>t</h1><select><option>a</option>'
                     '</select><p style="color:#ccc;background:#fff">faint</p><table><tr><th></th><th>b</th></tr>'
                     '<tr><td>1</td><td>2</td></tr></table></main></body></html>')
    assert {"select-name", "color-contrast", "empty-table-header"} <= {rule for rule, _, _ in _axe_violations(page)}


def _login(page, base, email: str = "nurse@clinic.test"):
    page.goto(f"{base}/recordings")
    assert "/login" in page.url
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r".*/recordings.*"))


def _login_on_a_phone(page, base) -> None:
    """A small phone's screen (390 x 844 px, what :func:`_assert_fits_a_phone` checks), logged in."""
    page.set_viewport_size({"width": 390, "height": 844})
    _login(page, base)


def test_clinic_workflow_in_a_real_browser(live_server, page, tmp_path):
    base, store = live_server
    page.goto(f"{base}/login")
    page.screenshot(path=str(ARTIFACTS / "01-login.png"))
    page.fill("input[name=email]", "nurse@clinic.test")
    page.fill("input[name=password]", "wrong password")
    page.click("main button[type=submit]")
    assert page.locator("p.error").inner_text() == "Wrong email or password."
    page.console_errors.clear()  # the 401 of that deliberate failure
    _login(page, base)

    store.add_patient(name="Kofi Mensah", external_id="KM-7", actor="test")
    abnormal = [p for p in reference_wavs() if p.name.startswith("abnormal")][0]
    page.goto(f"{base}/upload")
    page.set_input_files("input[name=file]", str(abnormal))
    page.select_option("#upload-site", label="mitral area (apex)")
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/recordings/\d+$"))
    assert page.locator("#site-text").inner_text().startswith("mitral area (apex): left chest")
    assert page.locator("#verdict").inner_text().strip() == "abnormal: refer"
    assert "Screening aid, not a diagnosis" in page.content()
    for image in ("#waveform", "#spectrogram"):
        _poll(page, image, "img => img.complete")
        assert page.eval_on_selector(image, "img => img.naturalWidth") > 100, image
    _poll(page, "#player", "a => a.readyState >= 1")
    page.eval_on_selector("#player", "a => a.play()")
    _poll(page, "#player", "a => a.currentTime > 0.2")
    assert page.eval_on_selector("#player", "a => a.duration") == pytest.approx(20.0, abs=0.1)
    page.screenshot(path=str(ARTIFACTS / "02-verdict.png"), full_page=True)
    _assert_accessible(page)

    page.select_option("#assign-patient", label="Kofi Mensah (KM-7)")
    page.click("button:text-is('Assign')")
    page.wait_for_selector("text=Recording assigned.")
    rec = store.list_recordings()[0]
    assert rec.patient_id == store.list_patients("Kofi")[0]["id"]

    page.select_option("#site-choice", label="aortic area")  # listened elsewhere: corrected
    page.click("button:text-is('Save place')")
    page.wait_for_selector("text=Place saved.")
    assert page.locator("#site-text").inner_text().startswith("aortic area: right side")
    assert store.list_recordings()[0].site == "aortic"

    page.goto(f"{base}/export")
    with page.expect_download() as info:
        page.click("#export-csv")
    target = tmp_path / "export.csv"
    info.value.save_as(target)
    text = target.read_text()
    assert text.startswith("recording_id,") and "Kofi Mensah" in text and "abnormal" in text
    page.uncheck("#export-audio")  # unticked, the box sends nothing: the page's hidden 0 must decide
    with page.expect_download() as info:
        page.click("#export-fhir-transaction")
    bundle = json.loads(Path(info.value.path()).read_text())
    media = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Media"]
    assert bundle["type"] == "transaction" and media and not any("data" in m["content"] for m in media)
    page.check("#export-audio")
    with page.expect_download() as info:
        page.click("#export-fhir")
    bundle = json.loads(Path(info.value.path()).read_text())
    assert bundle["type"] == "collection" and all("data" in e["resource"]["content"] for e in bundle["entry"]
                                                  if e["resource"]["resourceType"] == "Media")
    page.screenshot(path=str(ARTIFACTS / "03-export.png"))
    _assert_accessible(page)
    assert not page.console_errors, page.console_errors  # CSP violations show up here


def _assert_fits_a_phone(page, width: int = 390, tables_expected: bool = True) -> None:
    """Neither the page nor any list table is wider than the phone: a table that only fits by
    scrolling inside itself hides its right-hand columns ("Open", "Assign") off screen."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{page.url} scrolls sideways"
    tables = page.evaluate("Array.from(document.querySelectorAll('table.list'), t => [t.scrollWidth, t.clientWidth])")
    assert tables or not tables_expected, f"{page.url} has no list table"
    assert all(scroll <= client for scroll, client in tables), (page.url, tables)


def test_bad_upload_message_and_phone_layout(live_server, page):
    base, store = live_server
    _login_on_a_phone(page, base)
    page.goto(f"{base}/upload")
    page.set_input_files("input[name=file]", files=[{"name": "voice-memo.wav", "mimeType": "audio/wav",
                                                      "buffer": b"ID3 this is an mp3"}])
    page.click("#upload-form button[type=submit]")
    error = page.locator("#upload-error").inner_text()
    assert "this MP3 recording is damaged or incomplete" in error and store.count_recordings() == 0
    _assert_fits_a_phone(page, tables_expected=False)
    page.screenshot(path=str(ARTIFACTS / "04-phone-bad-upload.png"), full_page=True)
    _assert_accessible(page)


def _upload_and_open(page, base: str, path) -> None:
    """Upload a recording from the upload page and wait for its recording page."""
    page.goto(f"{base}/upload")
    page.set_input_files("input[name=file]", str(path))
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/recordings/\d+$"))


def test_a_normal_from_a_short_upload_is_shown_with_its_caution_on_a_phone(live_server, page, tmp_path):
    """A 3 s clip, as another stethoscope's app exports: its "normal" says that short recordings
    miss more abnormal hearts; the same recording whole (20 s) shows no such line."""
    import dsp

    base, _ = live_server
    _login_on_a_phone(page, base)
    normal = [p for p in reference_wavs() if p.name.startswith("normal")][0]
    samples, rate = dsp.read_wav(normal)
    clip = tmp_path / "phone-clip.wav"
    dsp.write_wav(clip, samples[: 3 * rate], rate)
    shown = {}
    for upload, cautioned in ((clip, True), (normal, False)):
        _upload_and_open(page, base, upload)
        assert page.locator("#verdict").inner_text().strip() == "normal"
        assert page.locator("#short-recording-caution").count() == int(cautioned)
        shown[upload] = page.url
    page.goto(shown[clip])
    text = page.locator("#short-recording-caution").inner_text()
    assert text.startswith("Short recording (3.0 s): a normal result") and "record 20 s if you can" in text
    _assert_fits_a_phone(page, tables_expected=False)
    page.screenshot(path=str(ARTIFACTS / "04-phone-short-clip.png"), full_page=True)
    _assert_accessible(page)
    page.goto(f"{base}/recordings")  # the list marks the short one too, its title the same sentence
    marks = page.locator("#recordings .short-recording")
    assert marks.count() == 1 and marks.first.is_visible() and marks.first.get_attribute("title") == text
    page.screenshot(path=str(ARTIFACTS / "04-phone-short-clip-list.png"), full_page=True)
    _assert_fits_a_phone(page)
    store = live_server[1]
    patient = store.add_patient(name="Amina Yusuf", external_id="P-0042", actor="test")
    store.assign_recording(int(shown[clip].rsplit("/", 1)[1]), patient, actor="test")
    page.goto(f"{base}/patients/{patient}")
    marks = page.locator(".short-recording")
    assert marks.count() == 1 and marks.first.is_visible() and marks.first.get_attribute("title") == text
    page.screenshot(path=str(ARTIFACTS / "04-phone-short-clip-patient.png"), full_page=True)
    _assert_accessible(page)
    _assert_fits_a_phone(page)
    assert page.console_errors == []


def test_an_abnormal_from_a_quiet_upload_is_shown_with_its_caution_on_a_phone(live_server, page, tmp_path):
    """A recording made with the gain set low (-55 dBFS RMS): its "abnormal: refer" asks for a
    louder recording without withholding the referral, its level is on its page, and the list
    marks it "quiet recording" with the same sentence, all inside a phone's width."""
    import dsp
    from model.train.augment import at_level

    base, _ = live_server
    _login_on_a_phone(page, base)
    abnormal = [p for p in reference_wavs() if p.name.startswith("abnormal")][0]
    samples, rate = dsp.read_wav(abnormal)
    quiet = tmp_path / "gain-low.wav"
    dsp.write_wav(quiet, at_level(samples, -55.0), rate)
    _upload_and_open(page, base, quiet)
    assert page.locator("#verdict").inner_text().strip() == "abnormal: refer"
    caution = page.locator("#quiet-recording-caution")
    assert caution.is_visible() and page.locator("#short-recording-caution").count() == 0
    text = caution.inner_text()
    assert re.match(r"Quiet recording \(-5[56] dBFS\): below -45 dBFS the model calls more healthy", text)
    assert text.endswith("if you cannot, refer as advised.")
    assert re.fullmatch(r"level -5[45] dBFS", page.locator("#level").inner_text())
    _assert_fits_a_phone(page, tables_expected=False)
    page.screenshot(path=str(ARTIFACTS / "04-phone-quiet-abnormal.png"), full_page=True)
    _assert_accessible(page)
    page.goto(f"{base}/recordings")
    marks = page.locator("#recordings .quiet-recording")
    assert marks.count() == 1 and marks.first.is_visible() and marks.first.get_attribute("title") == text
    assert marks.first.inner_text() == "quiet recording"
    _assert_fits_a_phone(page)
    assert page.console_errors == []


def test_device_clock_set_from_the_browsers_clock(live_server, page, heartpi_config):
    """A device whose clock fell behind (no battery clock, no internet): the page notices from
    the browser's clock, and the administrator's press sends the difference."""
    import datetime as dt

    from device.clock import apply_clock_request, pending_request
    from webui.passwords import hash_password

    base, store = live_server
    store.add_user(email="boss@clinic.test", password_hash=hash_password(PASSWORD), role="admin", actor="test")
    page.clock.set_system_time(dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3, minutes=12))
    _login(page, base, "boss@clinic.test")
    page.goto(f"{base}/device")
    mismatch = page.locator("#clock-mismatch")
    assert mismatch.is_visible()
    assert mismatch.inner_text() == ("The device clock is 3 h 12 min behind this computer's. "
                                     "New recordings get wrong dates until it is set.")
    assert page.locator("#browser-clock").is_visible() and page.locator("#clock-typed").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "05-device-clock-behind.png"), full_page=True)
    _assert_accessible(page)

    page.click("#clock-form button[type=submit]")
    page.wait_for_selector("text=it will be set within a few seconds")
    request, _ = pending_request(heartpi_config.clock_dir)
    assert request.offset_s == pytest.approx(3 * 3600 + 12 * 60, abs=60)
    assert request.requested_by == "boss@clinic.test"

    set_to = []
    apply_clock_request(heartpi_config.clock_dir, set_clock=set_to.append)  # what heartpi-clock.service does
    page.reload()
    assert re.search(r"clock moved forward by 3 h 1[12] min", page.locator("#clock-last").inner_text())
    assert not page.console_errors, page.console_errors


def test_admin_deletes_a_recording_in_the_browser(live_server, page, heartpi_config):
    from device.storage import store_recording
    from webui.passwords import hash_password

    base, store = live_server
    store.add_user(email="boss@clinic.test", password_hash=hash_password(PASSWORD), role="admin", actor="test")
    relative, sha = store_recording(heartpi_config.recordings_dir, reference_wavs()[0].read_bytes())
    rec_id = store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                                 device_id="test-box", verdict="poor_signal")
    _login(page, base, "boss@clinic.test")
    page.goto(f"{base}/export")  # first a whole-device backup, streamed by the real server
    with page.expect_download() as info:
        page.click("#backup-archive")
    archive = heartpi_config.data_dir.parent / "backup.tar"
    info.value.save_as(archive)
    assert info.value.suggested_filename.startswith("heartpi-test-box-")
    page.goto(f"{base}/recordings/{rec_id}")
    page.click("#delete button[type=submit]")  # the browser itself insists on a reason and the tick
    assert page.url.endswith(f"/recordings/{rec_id}") and store.get_recording(rec_id) is not None
    page.fill("#delete input[name=reason]", "test recording")
    page.check("#delete input[name=confirm]")
    page.screenshot(path=str(ARTIFACTS / "06-delete-recording.png"), full_page=True)
    _assert_accessible(page)
    page.click("#delete button[type=submit]")
    page.wait_for_selector(f"text=Recording {rec_id} deleted")
    assert store.get_recording(rec_id) is None
    assert not (heartpi_config.recordings_dir / relative).exists()
    page.click("header nav a:text-is('Audit')")
    page.fill("#audit-filters input[name=action]", "recording.delete")
    page.click("#audit-filters button[type=submit]")
    row = page.locator("#audit tbody tr").first.inner_text()
    assert "boss@clinic.test" in row and f"recording:{rec_id}" in row and row.endswith("test recording")
    assert not page.console_errors, page.console_errors

    from device.backup import restore_backup
    from device.config import config_from_mapping

    spare = config_from_mapping({"storage": {"data_dir": str(heartpi_config.data_dir.parent / "spare")}}, env={})
    assert restore_backup(spare, archive).recordings == 1  # the backup still holds what was deleted
    assert (spare.recordings_dir / relative).read_bytes() == reference_wavs()[0].read_bytes()


def test_a_crowded_clinic_finds_pages_and_assigns_in_a_real_browser(live_server, page):
    """A year of use: 300 patients, 150 recordings. The browser pages through the recordings,
    finds a rarely seen patient by name and assigns a recording to them, then uploads one from
    the patient's page with the patient already chosen."""
    from tests.crowd import bulk_patients, bulk_recordings

    base, store = live_server
    zainab = bulk_patients(store, ["Zainab Yusuf"], updated_at="2025-01-01T00:00:00+00:00")[0]
    bulk_patients(store, [f"Abebe {i:03d}" for i in range(299)], numbers="A")
    bulk_recordings(store, 150)
    _login(page, base)
    assert "Recordings 1–100 of 150" in page.inner_text("nav.pager")
    page.click("nav.pager >> text=Older →")
    page.wait_for_url(re.compile(r".*page=2.*"))
    assert "Recordings 101–150 of 150" in page.inner_text("nav.pager")

    page.click("#recordings tbody tr >> nth=0 >> text=Open")
    page.wait_for_url(re.compile(r".*/recordings/\d+$"))
    rec_id = int(page.url.rsplit("/", 1)[1])
    assert "Zainab Yusuf" not in page.inner_text("#assign-patient")
    page.fill("input[name=find]", "yusuf")
    page.click("button:text-is('Find')")
    page.wait_for_url(re.compile(r".*find=yusuf#patient$"))
    assert page.eval_on_selector("#assign-patient", "s => s.options[s.selectedIndex].text") == "Zainab Yusuf (N-00000)"
    page.screenshot(path=str(ARTIFACTS / "09-find-patient.png"), full_page=True)
    _assert_accessible(page)
    page.click("button:text-is('Assign')")
    page.wait_for_selector("text=Recording assigned.")
    assert store.get_recording(rec_id).patient_id == zainab
    assert all("404" in e for e in page.console_errors)  # bulk records have no audio behind them
    page.console_errors.clear()

    page.click("#patient >> text=Zainab Yusuf")
    page.wait_for_url(re.compile(rf".*/patients/{zainab}$"))
    page.click("#upload-for-patient")
    page.wait_for_url(re.compile(r".*/upload\?patient_id=\d+$"))  # not the patient page still unloading
    assert page.eval_on_selector("#upload-patient", "s => s.value") == str(zainab)
    page.set_input_files("input[name=file]", str(reference_wavs()[0]))
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/recordings/\d+$"))
    assert store.get_recording(int(page.url.rsplit("/", 1)[1])).patient_id == zainab
    assert page.console_errors == []


def test_a_clinician_enters_a_finding_and_the_device_page_counts_it_in_a_real_browser(
        live_server, page, heartpi_config):
    from device.storage import store_recording
    from model import Classifier

    base, store = live_server
    abnormal = [p for p in reference_wavs() if p.name.startswith("abnormal")][0]
    verdict = Classifier.load().classify_file(abnormal)
    relative, sha = store_recording(heartpi_config.recordings_dir, abnormal.read_bytes())
    rec_id = store.add_recording(file=relative, sha256=sha, duration_s=verdict.duration_s, rate=2000,
                                 source="device", device_id="test-box", verdict=verdict.label,
                                 p_abnormal=verdict.p_abnormal, model_sha256=verdict.model_sha256)
    _login(page, base)
    page.goto(f"{base}/recordings/{rec_id}")
    page.check("#finding-form input[value=abnormal]")
    page.fill("#finding-form input[name=note]", "echo: aortic stenosis")
    page.click("#finding-form button[type=submit]")
    page.wait_for_selector("text=Clinician's finding saved.")
    assert page.url.endswith(f"/recordings/{rec_id}#finding")
    assert "echo: aortic stenosis" in page.inner_text("#finding-text")
    assert page.is_checked("#finding-form input[value=abnormal]")
    assert store.get_recording(rec_id).finding == "abnormal"
    page.goto(f"{base}/device")
    assert "1 of 1" in page.inner_text("#field-results")
    page.screenshot(path=str(ARTIFACTS / "10-field-results.png"), full_page=True)
    _assert_accessible(page)
    assert page.console_errors == []


def test_listening_follows_the_pictures_in_a_real_browser(live_server, page, heartpi_config):
    """The player starts on the heart band; a click on the phonocardiogram plays from that
    moment and a red line on both pictures follows; another filter keeps the place and the
    half speed chosen; the choice survives a reload."""
    from device.storage import store_recording

    base, store = live_server
    abnormal = [p for p in reference_wavs() if p.name.startswith("abnormal")][0]
    relative, sha = store_recording(heartpi_config.recordings_dir, abnormal.read_bytes())
    rec_id = store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                                 device_id="test-box", verdict="abnormal", p_abnormal=0.8)
    _login(page, base)
    page.goto(f"{base}/recordings/{rec_id}")
    assert page.locator("#listen-apply").is_hidden() and page.locator("#speed-control").is_visible()
    assert page.locator("#timeline-hint").is_visible()
    _poll(page, "#player", "a => a.readyState >= 1")
    assert page.eval_on_selector("#player", "a => a.src").endswith(f"/recordings/{rec_id}/listen/heart.wav")
    assert page.eval_on_selector("#player", "a => a.duration") == pytest.approx(20.0, abs=0.1)
    _poll(page, "#waveform", "img => img.complete && img.naturalWidth > 0")

    box = page.locator("#waveform").bounding_box()
    page.locator("#waveform").click(position={"x": 0.5 * box["width"], "y": 0.5 * box["height"]})
    _poll(page, "#player", "a => !a.paused && a.currentTime > 10.1")
    assert 9.9 < page.eval_on_selector("#player", "a => a.currentTime") < 14
    heads = page.eval_on_selector_all(".timeline .playhead", "hs => hs.map(h => !h.hidden && "
                                      "(h.offsetLeft + 1) / h.parentElement.clientWidth)")
    assert len(heads) == 2 and all(0.49 < h < 0.75 for h in heads), heads
    page.screenshot(path=str(ARTIFACTS / "09-listening.png"), full_page=True)
    _assert_accessible(page)

    page.select_option("#speed", "0.5")
    assert page.eval_on_selector("#player", "a => a.playbackRate") == 0.5
    page.check("#listen-form input[value=bell]")
    _poll(page, "#player", "a => a.src.endsWith('/listen/bell.wav') && a.readyState >= 1 && a.currentTime > 9.9")
    assert page.eval_on_selector("#player", "a => a.playbackRate") == 0.5
    assert page.url.endswith(f"/recordings/{rec_id}?listen=bell#listen")
    page.reload()
    assert page.is_checked("#listen-form input[value=bell]")
    assert page.eval_on_selector("#player", "a => a.getAttribute('src')") == f"/recordings/{rec_id}/listen/bell.wav"
    assert not page.console_errors, page.console_errors


def test_the_guide_fits_a_phone_and_prints_without_the_menu(live_server, page):
    from device.gpio import PATTERNS

    base, _ = live_server
    _login_on_a_phone(page, base)
    page.click("header nav a:text-is('Guide')")
    page.wait_for_url(f"{base}/guide")
    assert page.locator("#lights tbody tr").count() == len(PATTERNS)
    _assert_fits_a_phone(page, tables_expected=False)
    assert page.locator("header.top").is_visible()
    page.emulate_media(media="print")
    assert page.locator("header.top").is_hidden() and page.locator("#lights").is_visible()
    assert page.locator("p.no-print").is_hidden() and page.locator("footer").is_visible()  # the disclaimer stays
    page.pdf(path=str(ARTIFACTS / "10-guide.pdf"), format="A4")
    page.screenshot(path=str(ARTIFACTS / "10-guide-print.png"), full_page=True)
    assert not page.console_errors, page.console_errors


def test_a_recording_prints_for_a_referral_in_a_real_browser(live_server, page, heartpi_config):
    """"Abnormal: refer" needs a paper to go with the patient: the printed page keeps who, when,
    where, the result and both pictures, and drops the menu, the player and every form."""
    from device.storage import store_recording

    base, store = live_server
    relative, sha = store_recording(heartpi_config.recordings_dir, reference_wavs()[0].read_bytes())
    pid = store.add_patient(name="Ama Owusu", external_id="AO-12", birth_date="2019-04-02", sex="female", actor="test")
    rec_id = store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                                 device_id="test-box", verdict="abnormal", p_abnormal=0.91, threshold=0.5,
                                 patient_id=pid, site="mitral")
    _login(page, base)
    page.goto(f"{base}/recordings/{rec_id}")
    assert page.locator("#referral").is_hidden() and page.locator("#listen-form").is_visible()
    page.evaluate("() => { window.print = () => { document.body.dataset.printed = 'yes'; }; }")
    page.click("#print-referral")
    assert page.get_attribute("body", "data-printed") == "yes"
    _poll(page, "#waveform", "img => img.complete && img.naturalWidth > 0")
    _poll(page, "#spectrogram", "img => img.complete && img.naturalWidth > 0")
    page.emulate_media(media="print")
    referral = page.inner_text("#referral")
    assert "Ama Owusu, number AO-12, born 2019-04-02, female" in referral and "Referred by" in referral
    assert "referral" in referral.lower()
    for kept in ("#verdict", "#site-text", "#recorded-at", "#waveform", "#spectrogram", "footer"):
        assert page.locator(kept).is_visible(), kept
    for dropped in ("header.top", "#print-referral", "#listen-form", "#player", "#patient", "#site-form",
                    "#finding", "#delete", ".playhead >> nth=0"):
        assert page.locator(dropped).is_hidden(), dropped
    page.pdf(path=str(ARTIFACTS / "11-referral.pdf"), format="A4")
    page.screenshot(path=str(ARTIFACTS / "11-referral-print.png"), full_page=True)
    assert not page.console_errors, page.console_errors


def test_every_page_an_administrator_opens_fits_a_phone(live_server, page, heartpi_config):
    """At 390 px (a small phone on the clinic Wi-Fi) no page scrolls sideways and no list table
    hides its right-hand columns, with recordings of every verdict (the longest badge is "poor
    signal: record again", beside "could not judge: refer"), a patient with a long name and audit rows present."""
    from device.storage import store_recording
    from device.records import UNJUDGED_NOTE
    from webui.passwords import hash_password

    base, store = live_server
    store.add_user(email="boss@clinic.test", password_hash=hash_password(PASSWORD), role="admin", actor="test")
    patient = store.add_patient(name="Nomvula Thandiwe Mahlangu-Okonkwo", external_id="KZN-000123-2026",
                                actor="test")
    recs = []
    for wav, (verdict, p, duration, assigned, note) in zip(reference_wavs(), (
            ("normal", 0.01, 6.0, True, ""), ("abnormal", 0.4, 20.0, True, ""),
            ("poor_signal", None, 20.0, True, UNJUDGED_NOTE), ("poor_signal", None, 8.0, False, ""))):
        relative, sha = store_recording(heartpi_config.recordings_dir, wav.read_bytes())
        recs.append(store.add_recording(file=relative, sha256=sha, duration_s=duration, rate=2000, source="device",
                                        device_id="heartpi-clinic-07", verdict=verdict, p_abnormal=p,
                                        threshold=0.076, heart_rate_bpm=72.0, site="aortic", visit="visit-1",
                                        patient_id=patient if assigned else None, note=note))
    # the Device page's longest lines: a send to the FHIR server that failed after one that went, and a
    # box whose power bank sagged twice
    from webui.exporting import FHIR_SEND_FAILED, FHIR_SENT

    store.audit("cli:export", FHIR_SENT, "", "2026-03-01..- to fhir.regional-health-office.example.org: 12 recordings, "
                "40 resources created, 0 updated")
    store.audit("cli:export", FHIR_SEND_FAILED, "", "2026-03-01..- referrals only to fhir.regional-health-office.example"
                ".org: could not reach the FHIR server at fhir.regional-health-office.example.org ([Errno -3] Temporary "
                "failure in name resolution); check the address and that this device's network reaches it")
    store.set_status("power", json.dumps({"watched": True, "low": False, "sags": 2, "last_sag_at": time.time() - 600,
                                          "started_at": time.time() - 7200}))
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/login")
    page.screenshot(path=str(ARTIFACTS / "07-phone-login.png"), full_page=True)
    _assert_fits_a_phone(page, tables_expected=False)
    _assert_accessible(page)
    _login(page, base, "boss@clinic.test")
    for path in ("/recordings", f"/recordings/{recs[0]}", "/upload", "/patients", f"/patients/{patient}",
                 f"/patients/{patient}/edit", "/patients/new", "/export", "/device", "/guide", "/admin/users",
                 "/admin/audit", "/password"):
        page.goto(base + path)
        assert page.url.endswith(path), (path, page.url)
        name = re.sub(r"[^a-z0-9]+", "-", path.strip("/").lower())
        page.screenshot(path=str(ARTIFACTS / f"07-phone-{name}.png"), full_page=True)
        _assert_fits_a_phone(page, tables_expected=False)
        _assert_accessible(page)
        if path == "/device":
            assert page.inner_text("#power-supply").startswith("under-voltage 2 times since ")
            assert "Temporary failure in name resolution" in page.inner_text("#fhir-send")
    # whom to refer: the abnormal recording and the person the box could not judge, the longest choice
    page.goto(base + "/recordings")
    page.select_option("select[name=verdict]", "refer")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**verdict=refer**")
    assert page.locator("#recordings tbody tr").count() == 2
    assert page.locator("#recordings .unjudged").count() == 1
    page.screenshot(path=str(ARTIFACTS / "07-phone-recordings-refer.png"), full_page=True)
    _assert_fits_a_phone(page, tables_expected=False)
    assert not page.console_errors, page.console_errors
