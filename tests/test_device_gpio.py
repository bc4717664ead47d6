"""LED patterns and button semantics with gpiozero's MockFactory pins."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from device import gpio


@pytest.fixture
def indicator(mock_factory):
    ind = gpio.Indicator(button_pin=17, green_pin=27, red_pin=22, amber_pin=23, long_press_seconds=0.3,
                         pin_factory=mock_factory)
    yield ind
    ind.close()


def pin(factory, number):
    return factory.pin(number)


@pytest.mark.parametrize("state,lit", [(gpio.NORMAL, 27), (gpio.ABNORMAL, 22), (gpio.POOR_SIGNAL, 23)])
def test_result_states_light_one_steady_led(indicator, mock_factory, state, lit):
    indicator.show(state)
    time.sleep(0.05)
    for number in (27, 22, 23):
        assert pin(mock_factory, number).state == (number == lit)


def test_off_turns_everything_off(indicator, mock_factory):
    indicator.show(gpio.ABNORMAL)
    indicator.show(gpio.OFF)
    assert not any(pin(mock_factory, n).state for n in (27, 22, 23))


@pytest.mark.parametrize("state,number,on,off,watch", [
    (gpio.RECORDING, 27, 0.5, 0.5, 1.15),  # green, once a second: recording
    (gpio.FAULT, 22, 0.2, 0.2, 0.5),       # red, fast: fault
])
def test_blinking_states_keep_their_rhythm(indicator, mock_factory, state, number, on, off, watch):
    led = pin(mock_factory, number)
    led.clear_states()
    indicator.show(state)
    time.sleep(watch)
    indicator.show(gpio.OFF)
    last = round(watch - on - off, 2)  # switched off this long after the second "on"
    led.assert_states_and_times([(0.0, False), (0.0, True), (on, False), (off, True), (last, False)])


def test_every_state_has_words_for_the_health_worker():
    for state, light in gpio.PATTERNS.items():
        assert light.lights and light.meaning and light.action
        assert (light.pattern is None) == (state == gpio.OFF)
        if light.pattern is not None:
            assert light.lights.startswith(light.pattern.led)  # "green ...": the LED that lights
            assert all(f"and {also}" in light.lights for also in light.pattern.also)
            assert ("steady" in light.lights) == light.pattern.steady
    assert [s for s, light in gpio.PATTERNS.items() if light.result] == [gpio.NORMAL, gpio.ABNORMAL, gpio.POOR_SIGNAL,
                                                                        gpio.CANNOT_JUDGE]


def test_cannot_judge_lights_amber_and_red_together_and_the_next_state_clears_both(indicator):
    """Poor signal again and again: "record again" and "refer" at once, read by the lights' places."""
    indicator.show(gpio.CANNOT_JUDGE)
    assert [name for name, led in indicator.leds.items() if led.is_lit] == ["red", "amber"]
    indicator.show(gpio.NORMAL)
    assert [name for name, led in indicator.leds.items() if led.is_lit] == ["green"]
    indicator.show(gpio.CANNOT_JUDGE)
    indicator.show(gpio.POOR_SIGNAL)
    assert [name for name, led in indicator.leds.items() if led.is_lit] == ["amber"]


@pytest.mark.parametrize("state", [s for s, light in gpio.PATTERNS.items() if "every" in light.lights])
def test_the_words_give_the_blinks_true_rhythm(state):
    """"flashes every 3 s" must be a 3 s period, "every second" a 1 s one."""
    light = gpio.PATTERNS[state]
    said = re.search(r"every (\d+ s|second)", light.lights).group(1)
    period = 1.0 if said == "second" else float(said.split()[0])
    assert (light.pattern.period or light.pattern.on_time + light.pattern.off_time) == pytest.approx(period)


@pytest.mark.parametrize("place", [1, 3, 4])
def test_the_ready_light_flashes_the_places_number(indicator, mock_factory, place):
    """A protocol of places: N short flashes, then a rest longer than any gap inside the group,
    every 3 s, so "3 flashes" can be counted and never run into the next group."""
    pattern = gpio.PATTERNS[gpio.READY_AT_PLACE].pattern
    led = pin(mock_factory, 27)
    led.clear_states()
    indicator.show(gpio.READY_AT_PLACE, place)
    time.sleep(pattern.period + 0.1)  # one whole group and the start of the next
    indicator.show(gpio.OFF)
    changes, clock = [], 0.0
    for t, lit in led.states:  # gpiozero's history: (seconds since the previous change, state)
        clock += t
        changes.append((round(clock, 1), lit))
    ons = [t for t, lit in changes if lit]
    assert len(ons) == place + 1, changes  # this group, and the first flash of the next
    assert ons[-1] == pytest.approx(ons[0] + pattern.period, abs=0.06)
    gaps = [b - a for a, b in zip(ons, ons[1:])]
    assert all(g == pytest.approx(pattern.on_time + pattern.off_time, abs=0.06) for g in gaps[:-1])
    assert gaps[-1] - (pattern.on_time + pattern.off_time) >= 0.9  # the rest tells groups apart


def test_place_flashes_are_refused_beyond_what_fits_in_the_period(indicator):
    with pytest.raises(ValueError, match="1 to 5 flashes"):
        indicator.show(gpio.READY_AT_PLACE, 6)
    with pytest.raises(ValueError):
        indicator.show(gpio.READY_AT_PLACE, 0)


def test_the_readme_table_is_the_lights_own_words():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## For the health worker: what the lights mean", 1)[1].split("\n\n", 2)[1]
    rows = [[cell.strip().strip("*") for cell in line.strip("|").split("|")] for line in section.splitlines()[2:]]
    assert rows == [[light.lights, light.meaning, light.action] for light in gpio.PATTERNS.values()]


def test_short_press_acts_on_release_and_long_press_cancels(indicator, mock_factory):
    events = []
    indicator.on_press = lambda: events.append("press")
    indicator.on_long_press = lambda: events.append("hold")
    button = pin(mock_factory, 17)
    button.drive_low()
    assert events == []  # nothing until release
    button.drive_high()
    time.sleep(0.05)
    assert events == ["press"]
    button.drive_low()
    time.sleep(0.5)
    button.drive_high()
    time.sleep(0.05)
    assert events == ["press", "hold"]  # a long press is never also a press


def test_unknown_state_is_refused(indicator):
    with pytest.raises(ValueError):
        indicator.show("disco")
