"""The health worker's guide: the LEDs' own words and this device's settings, for every role."""

from __future__ import annotations

import html
import re

import pytest

from device import gpio


@pytest.mark.parametrize("role", ["health_worker", "clinician", "admin"])
def test_every_role_reads_the_guide_from_the_menu(client, auth, role):
    auth.login(role)
    assert 'href="/guide">Guide</a>' in client.get("/recordings").get_data(as_text=True)
    page = client.get("/guide")
    assert page.status_code == 200 and "the health worker's guide" in html.unescape(page.get_data(as_text=True))


def test_the_lights_table_is_what_the_leds_do(client, auth):
    auth.login("health_worker")
    page = html.unescape(client.get("/guide").get_data(as_text=True))
    table = page.split('id="lights"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr[^>]*><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", table)
    assert rows == [(light.lights, light.meaning, light.action) for light in gpio.PATTERNS.values()]
    assert table.count('class="result-row"') == 4  # normal, refer, record again, cannot judge
    from device.records import POOR_SIGNALS_TO_REFER  # the rule the box keeps, in the guide's words

    assert f"no clear heartbeat {POOR_SIGNALS_TO_REFER} times in a row at one place" in " ".join(page.split())


def test_the_guide_gives_this_devices_own_times(tmp_path):
    """A device set to record 30 s, hold results 45 s and cancel after 3 s says so."""
    from device.config import config_from_mapping
    from webui import create_app
    from webui.passwords import hash_password

    config = config_from_mapping({"device": {"id": "clinic-7", "result_hold_seconds": 45},
                                  "audio": {"record_seconds": 30, "min_seconds": 8},
                                  "gpio": {"long_press_seconds": 3},
                                  "storage": {"data_dir": str(tmp_path)}}, env={})
    app = create_app({"TESTING": True, "HEARTPI_CONFIG": config})
    store = app.extensions["heartpi_store"]
    store.add_user(email="hw@clinic.test", password_hash=hash_password("a long enough password"),
                   role="health_worker", actor="test")
    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    token = login.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    client.post("/login", data={"email": "hw@clinic.test", "password": "a long enough password", "csrf_token": token})
    page = html.unescape(client.get("/guide").get_data(as_text=True))
    steps = " ".join(page.split('id="how-to-record"', 1)[1].split("</section>", 1)[0].split())
    assert "records for 30 seconds" in steps and "at least 8 seconds are needed" in steps
    assert "the shorter the recording, the more abnormal hearts it misses" in steps  # eval_short_clips
    assert "stays on for 45 seconds" in steps and "Hold the button for 3 seconds" in steps
    assert "this device, clinic-7" in page
    assert "the place your clinic's protocol names" in steps  # no audio.site: the general advice
    store.close()
